// test_client_cxx.cpp - kvclient.h is usable from C++: it compiles with -Wall -Wextra -Werror
// -pedantic as C++17, its initializer macro works, and calls link against the C library.
#include "kvclient.h"

#include <cerrno>
#include <cstdio>
#include <cstring>

int main()
{
    kvc_opts o = KVC_OPTS_INIT;
    kvc_hasher h;
    kvc_hash out[2];
    int32_t tokens[32] = {};
    kvc *c = nullptr;
    kvc_req r{};

    o.ns = "cxx";
    o.layout.n_layers = 1;
    o.layout.n_kv_heads = 1;
    o.layout.head_dim = 32;
    o.layout.page_tokens = 16;
    o.layout.k_fmt = KVC_FMT_FP8_E4M3;
    o.layout.v_fmt = KVC_FMT_FP8_E4M3;
    o.run_dir = "/nonexistent-kvd-dir";
    if (kvc_hasher_init(&h, o.ns, &o.layout, nullptr, 0) != 0)
        return 1;
    if (kvc_hash_chain(&h, tokens, 32, nullptr, out, 2) != 2)
        return 2;
    if (kvc_open(&o, &c) != -ENOENT || c != nullptr)
        return 3;
    r.op = KVC_OP_PING;
    if (kvc_submit(c, &r) != -EINVAL)
        return 4;
    if (std::strlen(kvc_strerror(-ESHUTDOWN)) == 0)
        return 5;
    static_assert(sizeof(kvc_page) == 16, "wire-sized page");
    static_assert(sizeof(kvc_layout) == 12, "wire-sized layout");
    std::puts("ok");
    return 0;
}
