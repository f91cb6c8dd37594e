/*
 * sock.h - unix-socket helpers for the side channel: fd passing and peer credentials.
 * All return 0 / a byte count, or a negative errno; none print.
 */
#ifndef KV_SOCK_H
#define KV_SOCK_H

#include <stddef.h>
#include <sys/types.h>

#ifdef __cplusplus
extern "C" {
#endif

struct kv_peer {
    pid_t pid;
    uid_t uid;
    gid_t gid;
};

/* Send one datagram of len bytes with fd attached as SCM_RIGHTS (fd < 0: none). */
int kv_sock_send(int sock, const void *buf, size_t len, int fd);
/* Receive one datagram into buf. *fd receives an attached fd (or -1); extra fds are closed.
 * Returns bytes received, 0 on orderly close, -EMSGSIZE when the datagram was truncated. */
ssize_t kv_sock_recv(int sock, void *buf, size_t len, int *fd);
/* Peer credentials of a connected unix socket (SO_PEERCRED). */
int kv_sock_peer(int sock, struct kv_peer *peer);
/* Is gid in the peer's supplementary groups (SO_PEERGROUPS)? 1 yes, 0 no, <0 error. */
int kv_sock_peer_in_group(int sock, gid_t gid);
/* Listening SOCK_SEQPACKET socket at path (unlinks a stale socket first), mode applied. */
int kv_sock_listen(const char *path, unsigned mode);
/* Connected SOCK_SEQPACKET client socket. */
int kv_sock_connect(const char *path);
/* pidfd of pid (pidfd_open), or a negative errno. */
int kv_pidfd_open(pid_t pid);

#ifdef __cplusplus
}
#endif
#endif
