/*
 * test_ops_install.c - `cmake --install` of the build tree into a temp prefix, then programs built
 * the way users build them: with `pkg-config --cflags --libs kvclient` (shared), with the static
 * library, and with find_package(kvclient) in a CMake project; each is run against a real kvd.
 * Also: the shared library's SONAME and exported symbols, the static library's global symbols,
 * the man pages (through `systemd-analyze verify` with the installed MANPATH).
 */
#include <criterion/criterion.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "ops_util.h"

static char tmp[64], prefix[128];

static const char prog_src[] =
    "#include <stdio.h>\n"
    "#include <string.h>\n"
    "#include <kvclient.h>\n"
    "int main(int argc, char **argv) {\n"
    "    struct kvc_opts o = KVC_OPTS_INIT;\n"
    "    struct kvc *c;\n"
    "    struct kvc_hash h[1];\n"
    "    struct kvc_page p[1], got[1];\n"
    "    int32_t tok[16];\n"
    "    uint32_t hit, next;\n"
    "    if (argc != 2) return 2;\n"
    "    o.run_dir = argv[1];\n"
    "    o.ns = \"installed\";\n"
    "    o.layout = (struct kvc_layout){2, 2, 64, 16, KVC_FMT_FP8_E4M3, KVC_FMT_FP8_E4M3, 0};\n"
    "    for (int i = 0; i < 16; i++) tok[i] = i;\n"
    "    int rc = kvc_open(&o, &c);\n"
    "    if (rc) { printf(\"open: %s\\n\", kvc_strerror(rc)); return 1; }\n"
    "    if (kvc_hash_chain(kvc_get_hasher(c), tok, 16, NULL, h, 1) != 1) return 1;\n"
    "    if ((rc = kvc_alloc(c, 1, h, p)) != 0) { printf(\"alloc: %d\\n\", rc); return 1; }\n"
    "    memset(kvc_page_ptr(c, &p[0]), 7, 64);\n"
    "    struct kvc_commit cm = {.page_id = p[0].id, .ntok = 16, .hash = h[0]};\n"
    "    if ((rc = kvc_commit(c, &cm, 1, p)) != 0) { printf(\"commit: %d\\n\", rc); return 1; }\n"
    "    if ((rc = kvc_lookup(c, h, 1, 0, 0, got, &hit, &next)) != 0) return 1;\n"
    "    printf(\"hit %u\\n\", hit);\n"
    "    kvc_close(c);\n"
    "    return hit == 1 ? 0 : 1;\n"
    "}\n";

static void write_file(const char *path, const char *text)
{
    FILE *f = fopen(path, "w");
    cr_assert_not_null(f, "%s", path);
    fputs(text, f);
    fclose(f);
}

/* Run a shell command line; returns its exit status, output in *out (caller frees). */
static int sh(char **out, const char *fmt, ...)
{
    char cmd[4096];
    va_list ap;
    struct ops_out o;
    va_start(ap, fmt);
    vsnprintf(cmd, sizeof(cmd), fmt, ap);
    va_end(ap);
    const char *argv[] = {"/bin/sh", "-c", cmd, NULL};
    cr_assert_eq(ops_run(argv, NULL, (uid_t)-1, 120000, &o), 0, "timed out: %s", cmd);
    if (out)
        *out = o.text;
    else
        ops_out_free(&o);
    return o.status;
}

static void setup(void)
{
    snprintf(tmp, sizeof(tmp), "/tmp/kvd-install.XXXXXX");
    cr_assert_not_null(mkdtemp(tmp));
    snprintf(prefix, sizeof(prefix), "%s/prefix", tmp);
}

static void teardown(void)
{
    if (getenv("KVT_KEEP") == NULL)
        sh(NULL, "rm -rf '%s'", tmp);
}

Test(ops_install, install_and_build_against_it, .init = setup, .fini = teardown, .timeout = 170)
{
    char *out = NULL;
    const char *cc = getenv("OPS_CC"), *cm = getenv("OPS_CMAKE");
    struct kvt_kvd k;

    cr_assert(cc && cm && getenv("KVD_BIN_DIR"), "test environment incomplete");
    int st = sh(&out, "'%s' --install '%s' --prefix '%s' 2>&1", cm, getenv("KVD_BIN_DIR"), prefix);
    cr_assert_eq(st, 0, "cmake --install failed: %s", out);
    free(out);

    static const char *const files[] = {
        "sbin/kvd",
        "bin/kvctl",
        "include/kvclient.h",
        "lib/libkvclient.so",
        "lib/libkvclient.so.0",
        "lib/libkvclient.a",
        "lib/pkgconfig/kvclient.pc",
        "lib/cmake/kvclient/kvclientConfig.cmake",
        "lib/cmake/kvclient/kvclientTargets.cmake",
        "lib/cmake/kvclient/kvclientConfigVersion.cmake",
        "share/man/man1/kvctl.1",
        "share/man/man5/kvd.conf.5",
        "share/man/man8/kvd.8",
        "lib/systemd/system/kvd.service",
        "lib/sysusers.d/kvd.conf",
        "lib/tmpfiles.d/kvd.conf",
        "etc/kvd/kvd.conf",
    };
    for (size_t i = 0; i < sizeof(files) / sizeof(files[0]); i++) {
        char p[512];
        struct stat sb;
        snprintf(p, sizeof(p), "%s/%s", prefix, files[i]);
        cr_expect_eq(stat(p, &sb), 0, "not installed: %s", files[i]);
    }

    /* the shared library: versioned SONAME, only kvc_* exported */
    cr_expect_eq(
        sh(&out, "readelf -d '%s/lib/libkvclient.so' | grep -c 'SONAME.*libkvclient.so.0'", prefix),
        0, "no SONAME libkvclient.so.0");
    free(out);
    cr_expect_eq(sh(&out,
                    "nm -D --defined-only '%s/lib/libkvclient.so' | awk '{print $3}' | "
                    "grep -v '^kvc_' | grep -v '^KVC_0$' | grep -v '^$'",
                    prefix),
                 1, "symbols besides kvc_* exported:\n%s", out);
    free(out);
    cr_expect_eq(sh(&out,
                    "nm -g --defined-only '%s/lib/libkvclient.a' | awk 'NF==3{print $3}' | "
                    "grep -v '^kvc_'",
                    prefix),
                 1, "global symbols besides kvc_* in libkvclient.a:\n%s", out);
    free(out);

    /* programs built as users build them */
    char src[256];
    snprintf(src, sizeof(src), "%s/prog.c", tmp);
    write_file(src, prog_src);
    st = sh(&out,
            "export PKG_CONFIG_PATH='%s/lib/pkgconfig'; '%s' -Wall -Werror '%s' -o '%s/prog' "
            "$(pkg-config --cflags --libs kvclient) -Wl,-rpath,'%s/lib' 2>&1",
            prefix, cc, src, tmp, prefix);
    cr_assert_eq(st, 0, "pkg-config build failed:\n%s", out);
    free(out);
    st = sh(&out,
            "export PKG_CONFIG_PATH='%s/lib/pkgconfig'; '%s' '%s' -o '%s/prog_static' "
            "$(pkg-config --cflags kvclient) '%s/lib/libkvclient.a' "
            "$(pkg-config --static --libs kvclient | sed 's/-lkvclient//') 2>&1",
            prefix, cc, src, tmp, prefix);
    cr_assert_eq(st, 0, "static build failed:\n%s", out);
    free(out);
    char proj[256], lists[300];
    snprintf(proj, sizeof(proj), "%s/proj", tmp);
    mkdir(proj, 0755);
    snprintf(lists, sizeof(lists), "%s/CMakeLists.txt", proj);
    write_file(lists, "cmake_minimum_required(VERSION 3.16)\nproject(user C)\n"
                      "find_package(kvclient 0.1 REQUIRED)\n"
                      "add_executable(prog ../prog.c)\n"
                      "target_link_libraries(prog PRIVATE kvclient::kvclient)\n");
    st = sh(&out,
            "'%s' -S '%s' -B '%s/build' -DCMAKE_PREFIX_PATH='%s' -DCMAKE_C_COMPILER='%s' "
            "-DCMAKE_BUILD_RPATH='%s/lib' >/dev/null 2>&1 && '%s' --build '%s/build' 2>&1",
            cm, proj, proj, prefix, cc, prefix, cm, proj);
    cr_assert_eq(st, 0, "find_package(kvclient) project failed:\n%s", out);
    free(out);

    cr_assert_eq(ops_kvd_start(&k, NULL), 0);
    static const char *const progs[] = {"prog", "prog_static", "proj/build/prog"};
    for (size_t i = 0; i < 3; i++) {
        st = sh(&out, "'%s/%s' '%s'", tmp, progs[i], k.run_dir);
        cr_expect_eq(st, 0, "%s against kvd: %s", progs[i], out);
        cr_expect(strstr(out, "hit 1") != NULL, "%s printed: %s", progs[i], out);
        free(out);
    }
    kvt_kvd_cleanup(&k);

    /* the installed unit with the installed binary and man pages */
    if (access("/usr/bin/systemd-analyze", X_OK) == 0 && access("/usr/bin/man", X_OK) == 0) {
        st =
            sh(&out,
               "sed 's#^ExecStart=[^ ]*#ExecStart=%s/sbin/kvd#' '%s/lib/systemd/system/kvd.service'"
               " > '%s/kvd.service' && MANPATH='%s/share/man' systemd-analyze verify "
               "'%s/kvd.service' 2>&1",
               prefix, prefix, tmp, prefix, tmp);
        cr_expect_eq(st, 0, "installed unit or man pages do not verify:\n%s", out);
        free(out);
    }
}
