/* Unit tests of path confinement, listings and ranges of the shared folder (services/agent/agent_files.c). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <cmocka.h>
#include <fcntl.h>
#include <ftw.h>
#include <sys/stat.h>
#include <unistd.h>
#include "../../services/agent/agent_cli.c"
#include "../../services/agent/agent_files.c"

static char base[64];  /* tmp/, holding outside.txt and share/ */
static char root[128]; /* tmp/share */

static void clean_ok(const char *in, const char *want)
{
    char out[PATH_MAX];

    if (agent_files_clean(in, strlen(in), out, sizeof(out)) != 0)
        fail_msg("'%s' should be accepted", in);
    assert_string_equal(out, want);
}

static void cleans_paths(void **state)
{
    clean_ok("", "");
    clean_ok("/", "");
    clean_ok("///", "");
    clean_ok("a", "a");
    clean_ok("/a/b/", "a/b");
    clean_ok("//a///b//c", "a/b/c");
    clean_ok("...", "...");
    clean_ok(".hidden/..x/x..", ".hidden/..x/x..");
    clean_ok("a b/%2e%2e", "a b/%2e%2e"); /* decoding happened before: these are names */
}

static void refuses_dot_segments(void **state)
{
    static const char *const bad[] = {"..", "../", "/..", "a/..", "a/../b", "./a", "a/./b", ".", "a/.", "../../etc/passwd"};
    char out[PATH_MAX];
    size_t i;

    for (i = 0; i != MM_ARRAY_SIZE(bad); ++i)
        if (agent_files_clean(bad[i], strlen(bad[i]), out, sizeof(out)) == 0)
            fail_msg("'%s' should be refused", bad[i]);
    assert_int_equal(agent_files_clean("a\0b", 3, out, sizeof(out)), -EINVAL); /* an embedded NUL */
    assert_int_equal(agent_files_clean("abcdef", 6, out, 4), -EINVAL);         /* does not fit */
}

static void put(const char *rel, const char *content)
{
    char path[PATH_MAX];
    int fd;

    snprintf(path, sizeof(path), "%s/%s", base, rel);
    assert_true((fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644)) >= 0);
    assert_int_equal(write(fd, content, strlen(content)), (ssize_t)strlen(content));
    close(fd);
}

static void link_at(const char *target, const char *rel)
{
    char path[PATH_MAX];

    snprintf(path, sizeof(path), "%s/%s", base, rel);
    assert_int_equal(symlink(target, path), 0);
}

static int setup(void **state)
{
    char path[PATH_MAX];

    snprintf(base, sizeof(base), "/tmp/mm-test-paths-XXXXXX");
    assert_non_null(mkdtemp(base));
    snprintf(root, sizeof(root), "%s/share", base);
    assert_int_equal(mkdir(root, 0755), 0);
    snprintf(path, sizeof(path), "%s/share/sub", base);
    assert_int_equal(mkdir(path, 0755), 0);
    put("outside.txt", "secret");
    put("share/file.txt", "hello");
    put("share/sub/inner.txt", "inner");
    link_at("sub/inner.txt", "share/link_in");  /* relative, inside */
    link_at(path, "share/dirlink_abs_in");      /* absolute, inside */
    link_at("sub", "share/dirlink_in");         /* a folder, inside */
    link_at("/etc/passwd", "share/link_out");   /* absolute, outside */
    link_at("../outside.txt", "share/rel_out"); /* relative, outside */
    link_at("/etc", "share/dirlink_out");       /* a folder outside */
    link_at("..", "share/sub/up");              /* the share itself, from below: inside */
    link_at("../..", "share/sub/upup");         /* above the share */
    link_at("loop", "share/loop");              /* a loop */
    link_at("missing", "share/dangling");
    snprintf(path, sizeof(path), "%s/share/fifo", base);
    assert_int_equal(mkfifo(path, 0644), 0);
    link_at("share", "share_link"); /* the share given through a symlink */
    return 0;
}

static int rm_one(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    return remove(path);
}

static int teardown(void **state)
{
    nftw(base, rm_one, 16, FTW_DEPTH | FTW_PHYS);
    return 0;
}

static agent_share_t share_of(const char *dir)
{
    agent_share_t s;
    agent_err_t err;

    if (agent_share_open(&s, dir, &err) != 0)
        fail_msg("share %s: %s", dir, err.msg);
    return s;
}

static void assert_reads(agent_share_t *s, const char *rel, const char *want)
{
    char buf[64];
    int fd = agent_files_open(s, rel, 0);
    ssize_t n;

    if (fd < 0)
        fail_msg("'%s' should open: %s", rel, strerror(-fd));
    n = read(fd, buf, sizeof(buf) - 1);
    close(fd);
    assert_true(n >= 0);
    buf[n] = '\0';
    assert_string_equal(buf, want);
}

static void opens_inside(void **state)
{
    agent_share_t s = share_of(root);
    int fd;

    assert_reads(&s, "file.txt", "hello");
    assert_reads(&s, "sub/inner.txt", "inner");
    assert_reads(&s, "link_in", "inner");
    assert_reads(&s, "dirlink_in/inner.txt", "inner");
    assert_reads(&s, "dirlink_abs_in/inner.txt", "inner");
    assert_reads(&s, "sub/up/file.txt", "hello");
    assert_true((fd = agent_files_open(&s, "", 1)) >= 0);
    close(fd);
    assert_true((fd = agent_files_open(&s, "sub", 1)) >= 0);
    close(fd);
    assert_true((fd = agent_files_open(&s, "dirlink_in", 1)) >= 0);
    close(fd);
    agent_share_close(&s);
}

static void refuses_escapes(void **state)
{
    agent_share_t s = share_of(root);

    assert_int_equal(agent_files_open(&s, "link_out", 0), -EPERM);
    assert_int_equal(agent_files_open(&s, "rel_out", 0), -EPERM);
    assert_int_equal(agent_files_open(&s, "dirlink_out/passwd", 0), -EPERM);
    assert_int_equal(agent_files_open(&s, "dirlink_out", 1), -EPERM);
    assert_int_equal(agent_files_open(&s, "sub/upup/outside.txt", 0), -EPERM);
    assert_int_equal(agent_files_open(&s, "sub/upup", 1), -EPERM);
    agent_share_close(&s);
}

static void refuses_what_is_not_there_or_not_a_file(void **state)
{
    agent_share_t s = share_of(root);

    assert_int_equal(agent_files_open(&s, "missing.txt", 0), -ENOENT);
    assert_int_equal(agent_files_open(&s, "dangling", 0), -ENOENT);
    assert_int_equal(agent_files_open(&s, "loop", 0), -ENOENT);
    assert_int_equal(agent_files_open(&s, "sub", 0), -ENOENT);      /* a folder is not a file */
    assert_int_equal(agent_files_open(&s, "file.txt", 1), -ENOENT); /* nor a file a folder */
    assert_int_equal(agent_files_open(&s, "", 0), -ENOENT);
    assert_int_equal(agent_files_open(&s, "fifo", 0), -ENOENT); /* and it does not block */
    agent_share_close(&s);
}

static void share_given_through_a_symlink(void **state)
{
    char path[PATH_MAX];
    agent_share_t s;

    snprintf(path, sizeof(path), "%s/share_link", base);
    s = share_of(path);
    assert_string_equal(s.root, root);
    assert_reads(&s, "file.txt", "hello");
    assert_int_equal(agent_files_open(&s, "rel_out", 0), -EPERM);
    agent_share_close(&s);
}

static void share_must_be_a_folder(void **state)
{
    char path[PATH_MAX];
    agent_share_t s;
    agent_err_t err;

    snprintf(path, sizeof(path), "%s/outside.txt", base);
    assert_true(agent_share_open(&s, path, &err) < 0);
    assert_true(agent_share_open(&s, "/nonexistent/mm-share", &err) < 0);
}

static void lists_only_what_is_inside(void **state)
{
    agent_share_t s = share_of(root);
    static const char *const want[][2] = {
        {"dirlink_abs_in", "dir"}, {"dirlink_in", "dir"}, {"file.txt", "file"}, {"link_in", "file"}, {"sub", "dir"}};
    int fd = agent_files_open(&s, "", 1);
    json_t *list = agent_files_list(&s, fd, ""), *entries, *e;
    size_t i;

    assert_non_null(list);
    assert_string_equal(json_string_value(json_object_get(list, "path")), "/");
    entries = json_object_get(list, "entries");
    assert_int_equal(json_array_size(entries), MM_ARRAY_SIZE(want));
    json_array_foreach(entries, i, e)
    {
        assert_string_equal(json_string_value(json_object_get(e, "name")), want[i][0]);
        assert_string_equal(json_string_value(json_object_get(e, "type")), want[i][1]);
    }
    assert_int_equal(json_integer_value(json_object_get(json_array_get(entries, 2), "size")), 5);
    assert_null(json_object_get(json_array_get(entries, 4), "size"));
    json_decref(list);

    fd = agent_files_open(&s, "sub", 1);
    list = agent_files_list(&s, fd, "sub");
    assert_string_equal(json_string_value(json_object_get(list, "path")), "/sub");
    /* inner.txt, and "up" (the share itself); not "upup" */
    assert_int_equal(json_array_size(json_object_get(list, "entries")), 2);
    json_decref(list);
    agent_share_close(&s);
}

static void range_ok(const char *h, uint64_t size, uint64_t first, uint64_t last)
{
    agent_range_t r;

    if (agent_files_range(h, strlen(h), size, &r) != 0)
        fail_msg("'%s' of %llu should be a range", h, (unsigned long long)size);
    assert_int_equal(r.first, first);
    assert_int_equal(r.last, last);
}

static void ranges(void **state)
{
    agent_range_t r;

    range_ok("bytes=0-99", 1000, 0, 99);
    range_ok("bytes=100-", 1000, 100, 999);
    range_ok("bytes=-100", 1000, 900, 999);
    range_ok("bytes=-5000", 1000, 0, 999);
    range_ok("bytes=990-5000", 1000, 990, 999);
    range_ok("Bytes= 5-5 ", 1000, 5, 5);
    assert_int_equal(agent_files_range("bytes=1000-", 11, 1000, &r), -1); /* past the end: 416 */
    assert_int_equal(agent_files_range("bytes=-0", 8, 1000, &r), -1);
    assert_int_equal(agent_files_range("bytes=0-", 8, 0, &r), -1); /* nothing to give of an empty file */
    /* ignored (the whole file): absent, another unit, several ranges, nonsense, backwards */
    assert_int_equal(agent_files_range(NULL, 0, 1000, &r), 1);
    assert_int_equal(agent_files_range("items=0-1", 9, 1000, &r), 1);
    assert_int_equal(agent_files_range("bytes=0-1,5-6", 13, 1000, &r), 1);
    assert_int_equal(agent_files_range("bytes=a-b", 9, 1000, &r), 1);
    assert_int_equal(agent_files_range("bytes=5-1", 9, 1000, &r), 1);
    assert_int_equal(agent_files_range("bytes=-", 7, 1000, &r), 1);
    assert_int_equal(agent_files_range("bytes=99999999999999999999-", 27, 1000, &r), 1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(cleans_paths),
        cmocka_unit_test(refuses_dot_segments),
        cmocka_unit_test(opens_inside),
        cmocka_unit_test(refuses_escapes),
        cmocka_unit_test(refuses_what_is_not_there_or_not_a_file),
        cmocka_unit_test(share_given_through_a_symlink),
        cmocka_unit_test(share_must_be_a_folder),
        cmocka_unit_test(lists_only_what_is_inside),
        cmocka_unit_test(ranges),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
