/*
 * test_registry.c - the user registry: the file format round trip, the
 * uniqueness rules, writers in several processes, readers during writes,
 * change detection, the shared cache under threads, and the validation of
 * logins, ids, domains and labels.
 */
#include <dirent.h>
#include <fcntl.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

#include "registry_internal.h"
#include "semail/registry.h"

/* ---- fixtures ------------------------------------------------------------ */

static int setup_dir(void **state)
{
    char *dir = strdup("/tmp/semail-test-registry-XXXXXX");
    assert_non_null(dir);
    assert_non_null(mkdtemp(dir));
    *state = dir;
    return 0;
}

static int teardown_dir(void **state)
{
    char *dir = *state;
    DIR *d = opendir(dir);
    struct dirent *e;
    if (d) {
        while ((e = readdir(d)) != NULL) {
            char path[512];
            if (e->d_name[0] == '.')
                continue;
            snprintf(path, sizeof(path), "%s/%s", dir, e->d_name);
            unlink(path);
        }
        closedir(d);
    }
    rmdir(dir);
    free(dir);
    return 0;
}

/* A valid active record; NAME gives login, id and subdomain. */
static semail_user make_user(const char *name, char *domain, size_t dn, uid_t uid)
{
    semail_user u;
    memset(&u, 0, sizeof(u));
    snprintf(domain, dn, "%s.semail.test", name);
    u.version = SEMAIL_USER_VERSION;
    u.login = name;
    u.id = name;
    u.domain = domain;
    u.kind = SEMAIL_DOMAIN_SUBDOMAIN;
    u.uid = uid;
    u.gid = uid;
    u.storage = "directory";
    u.size = 1 << 20;
    u.state = SEMAIL_USER_ACTIVE;
    u.created = 1700000000;
    return u;
}

static void add_user(const char *dir, const char *name, uid_t uid)
{
    char domain[128];
    semail_user u = make_user(name, domain, sizeof(domain), uid);
    if (semail_registry_add(dir, &u) != 0)
        fail_msg("add %s: %s", name, semail_error_last());
}

static void write_text(const char *dir, const char *name, const char *text)
{
    char path[512];
    FILE *f;
    snprintf(path, sizeof(path), "%s/%s", dir, name);
    f = fopen(path, "w");
    assert_non_null(f);
    fputs(text, f);
    fclose(f);
}

/* ---- validation ---------------------------------------------------------- */

static void test_validate__names(void **state)
{
    static const char *const good[] = {
        "alice", "a", "0day", "a.b", "a_b-c", "x1.y2_z3", "abcdefghijklmnopqrstuvwxyz012345"};
    static const char *const bad[] = {
        "",    "../x", ".a",       "_a",  "-a", "a..b", "a.",  "A",
        "a b", "a/b",  "*)(uid=*", "a@b", "é",  "a\nb", "a%b", "abcdefghijklmnopqrstuvwxyz0123456"};
    size_t i;
    for (i = 0; i < sizeof(good) / sizeof(good[0]); i++)
        if (semail_validate_name(good[i]) != 0)
            fail_msg("'%s' refused: %s", good[i], semail_error_last());
    for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        if (semail_validate_name(bad[i]) != SEMAIL_EINVAL)
            fail_msg("'%s' accepted", bad[i]);
    assert_int_equal(semail_validate_name(NULL), SEMAIL_EINVAL);
    semail_validate_name("../x");
    assert_string_equal(semail_error_last(), "'../x': only a-z, 0-9, '.', '_' and '-' are allowed");
    semail_validate_name("a\nb");
    assert_non_null(strstr(semail_error_last(), "a\\x0Ab"));
}

static void test_validate__domains_and_labels(void **state)
{
    char long_label[80], long_domain[400];
    static const char *const good[] = {"example.org", "a.b", "x-1.example.co.uk", "1.2.3.4"};
    static const char *const bad[] = {"",         "org",         "example..org", ".example.org",
                                      "example.", "Example.org", "-a.org",       "a-.org",
                                      "a_b.org",  "a b.org",     "a.org/x"};
    size_t i;

    for (i = 0; i < sizeof(good) / sizeof(good[0]); i++)
        if (semail_validate_domain(good[i]) != 0)
            fail_msg("'%s' refused: %s", good[i], semail_error_last());
    for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        if (semail_validate_domain(bad[i]) != SEMAIL_EINVAL)
            fail_msg("'%s' accepted", bad[i]);

    memset(long_label, 'a', 64);
    long_label[64] = '\0';
    assert_int_equal(semail_validate_label(long_label), SEMAIL_EINVAL);
    long_label[63] = '\0';
    assert_int_equal(semail_validate_label(long_label), 0);
    /* 4 labels of 63 + 3 dots = 255 > 253 */
    snprintf(long_domain, sizeof(long_domain), "%s.%s.%s.%s", long_label, long_label, long_label,
             long_label);
    assert_int_equal(semail_validate_domain(long_domain), SEMAIL_EINVAL);

    assert_int_equal(semail_validate_label("alice"), 0);
    assert_int_equal(semail_validate_label("a-1"), 0);
    assert_int_equal(semail_validate_label("a.b"), SEMAIL_EINVAL);
    assert_non_null(strstr(semail_error_last(), "'.'"));
    assert_int_equal(semail_validate_label(""), SEMAIL_EINVAL);
    assert_int_equal(semail_validate_label("-a"), SEMAIL_EINVAL);
    assert_int_equal(semail_validate_label("a-"), SEMAIL_EINVAL);
    assert_int_equal(semail_validate_label("Alice"), SEMAIL_EINVAL);
}

/* ---- the file format ----------------------------------------------------- */

static void test_registry__missing_file_is_an_empty_registry(void **state)
{
    semail_registry *reg = NULL;
    const semail_user *u;
    uid_t uid;

    assert_int_equal(semail_registry_load(&reg, *state), 0);
    assert_int_equal(semail_registry_count(reg), 0);
    assert_null(semail_registry_get(reg, 0));
    assert_int_equal(semail_registry_find_login(&u, reg, "alice"), SEMAIL_ENOTFOUND);
    assert_int_equal(semail_registry_find_address(&u, reg, "a", "b.c"), SEMAIL_ENOTFOUND);
    assert_int_equal(semail_registry_has_domain(reg, "b.c"), 0);
    assert_int_equal(semail_registry_changed(reg), 0);
    assert_int_equal(semail_registry_free_uid(&uid, reg, 100, 200), 0);
    assert_int_equal(uid, 100);
    add_user(*state, "alice", 100);
    assert_int_equal(semail_registry_changed(reg), 1);
    semail_registry_free(reg);
}

static void test_registry__round_trip_encodes_odd_bytes(void **state)
{
    static const char keys[] = "ssh-ed25519 AAAA key=1 100%\tx\ny\r\x01z";
    char domain[128];
    semail_user u = make_user("alice", domain, sizeof(domain), 20000);
    semail_registry *reg = NULL;
    const semail_user *r;
    char path[512], line[4096];
    FILE *f;
    int lines = 0;

    u.ssh_keys = keys;
    u.container = "semail-alice";
    u.ssh_port = 22001;
    u.kind = SEMAIL_DOMAIN_OWN;
    u.state = SEMAIL_USER_CREATING;
    u.size = UINT64_MAX;
    assert_int_equal(semail_registry_add(*state, &u), 0);
    assert_int_equal(semail_registry_load(&reg, *state), 0);
    assert_int_equal(semail_registry_find_login(&r, reg, "alice"), 0);
    assert_string_equal(r->ssh_keys, keys);
    assert_string_equal(r->container, "semail-alice");
    assert_string_equal(r->id, "alice");
    assert_string_equal(r->domain, "alice.semail.test");
    assert_string_equal(r->storage, "directory");
    assert_int_equal(r->ssh_port, 22001);
    assert_int_equal(r->uid, 20000);
    assert_int_equal(r->gid, 20000);
    assert_int_equal(r->kind, SEMAIL_DOMAIN_OWN);
    assert_int_equal(r->state, SEMAIL_USER_CREATING);
    assert_true(r->size == UINT64_MAX);
    assert_int_equal(r->created, 1700000000);
    semail_registry_free(reg);

    /* One header and one record line: the odd bytes are all escaped. */
    snprintf(path, sizeof(path), "%s/registry", (char *)*state);
    f = fopen(path, "r");
    assert_non_null(f);
    while (fgets(line, sizeof(line), f))
        lines++;
    fclose(f);
    assert_int_equal(lines, 2);
}

static void test_registry__unknown_fields_are_ignored(void **state)
{
    semail_registry *reg = NULL;
    const semail_user *r;

    write_text(*state, "registry",
               "# semail registry v1\n"
               "# a comment\n"
               "\n"
               "login=bob\tid=bob\tdomain=example.org\tkind=domain\tuid=5\tgid=6\t"
               "storage=image\tfuture=x%20y\tstate=active\tcreated=7\n");
    assert_int_equal(semail_registry_load(&reg, *state), 0);
    assert_int_equal(semail_registry_count(reg), 1);
    assert_int_equal(semail_registry_find_login(&r, reg, "bob"), 0);
    assert_null(r->ssh_keys);
    assert_null(r->container);
    assert_int_equal(r->ssh_port, 0);
    assert_int_equal(r->gid, 6);
    assert_string_equal(r->storage, "image");
    semail_registry_free(reg);
}

static void expect_bad_file(const char *dir, const char *text, const char *needle)
{
    semail_registry *reg = NULL;
    write_text(dir, "registry", text);
    assert_int_equal(semail_registry_load(&reg, dir), SEMAIL_EINVAL);
    assert_null(reg);
    if (strstr(semail_error_last(), needle) == NULL)
        fail_msg("message '%s' lacks '%s'", semail_error_last(), needle);
}

static void test_registry__malformed_files_name_the_line(void **state)
{
    const char *h = "# semail registry v1\n";
    char text[1024];

    expect_bad_file(*state, "# something else\n", "registry:1:");
    snprintf(text, sizeof(text), "%slogin=a\tid=a\n", h);
    expect_bad_file(*state, text, "registry:2:");
    snprintf(text, sizeof(text),
             "%s\nlogin=../x\tid=a\tdomain=a.b\tkind=domain\tuid=5\tstate=active\n", h);
    expect_bad_file(*state, text, "registry:3: login '../x'");
    snprintf(text, sizeof(text),
             "%slogin=a\tid=a\tdomain=a.b\tkind=domain\tuid=5%%\tstate=active\n", h);
    expect_bad_file(*state, text, "registry:2:");
    snprintf(text, sizeof(text), "%slogin=a\tid=a\tdomain=a.b\tkind=domain\tuid=0\tstate=active\n",
             h);
    expect_bad_file(*state, text, "registry:2:");
    snprintf(text, sizeof(text),
             "%slogin=a\tid=a%%00\tdomain=a.b\tkind=domain\tuid=1\tstate=active\n", h);
    expect_bad_file(*state, text, "registry:2:");
    snprintf(text, sizeof(text), "%slogin=a\tid=a\tdomain=a.b\tkind=domain\tuid=1\tstate=active",
             h);
    expect_bad_file(*state, text, "registry:2:");
    snprintf(text, sizeof(text),
             "%slogin=a\tid=a\tdomain=a.b\tkind=domain\tuid=1\tstate=active\n"
             "login=a\tid=b\tdomain=b.b\tkind=domain\tuid=2\tstate=active\n",
             h);
    expect_bad_file(*state, text, "login 'a' appears twice");
}

/* ---- queries and writers ------------------------------------------------- */

static void test_registry__find_address_ignores_case_and_needs_active(void **state)
{
    char domain[128];
    semail_user u = make_user("carol", domain, sizeof(domain), 30);
    semail_registry *reg = NULL;
    const semail_user *r;

    add_user(*state, "alice", 10);
    add_user(*state, "bob", 20);
    u.state = SEMAIL_USER_CREATING;
    assert_int_equal(semail_registry_add(*state, &u), 0);
    assert_int_equal(semail_registry_load(&reg, *state), 0);
    assert_int_equal(semail_registry_count(reg), 3);
    assert_string_equal(semail_registry_get(reg, 0)->login, "alice");
    assert_string_equal(semail_registry_get(reg, 2)->login, "carol");
    assert_int_equal(semail_registry_find_address(&r, reg, "BOB", "Bob.SEMAIL.test"), 0);
    assert_string_equal(r->login, "bob");
    assert_int_equal(semail_registry_find_address(&r, reg, "bob", "alice.semail.test"),
                     SEMAIL_ENOTFOUND);
    assert_int_equal(semail_registry_find_address(&r, reg, "carol", "carol.semail.test"),
                     SEMAIL_ENOTFOUND);
    assert_int_equal(semail_registry_has_domain(reg, "CAROL.semail.test"), 1);
    assert_int_equal(semail_registry_has_domain(reg, "semail.test"), 0);
    semail_registry_free(reg);
}

static void test_registry__add_refuses_what_is_taken(void **state)
{
    char d1[128];
    semail_user u;

    add_user(*state, "alice", 10);
    u = make_user("alice", d1, sizeof(d1), 11);
    u.domain = "other.semail.test";
    assert_int_equal(semail_registry_add(*state, &u), SEMAIL_EEXISTS);
    assert_non_null(strstr(semail_error_last(), "login 'alice'"));

    u = make_user("bob", d1, sizeof(d1), 12);
    u.id = "alice";
    u.domain = "alice.semail.test";
    assert_int_equal(semail_registry_add(*state, &u), SEMAIL_EEXISTS);
    assert_non_null(strstr(semail_error_last(), "address 'alice@alice.semail.test'"));

    u = make_user("bob", d1, sizeof(d1), 12);
    u.domain = "alice.semail.test";
    assert_int_equal(semail_registry_add(*state, &u), SEMAIL_EEXISTS);
    assert_non_null(strstr(semail_error_last(), "domain 'alice.semail.test'"));

    u = make_user("bob", d1, sizeof(d1), 10);
    assert_int_equal(semail_registry_add(*state, &u), SEMAIL_EEXISTS);
    assert_non_null(strstr(semail_error_last(), "uid 10"));

    u = make_user("bob", d1, sizeof(d1), 12);
    u.id = "../x";
    assert_int_equal(semail_registry_add(*state, &u), SEMAIL_EINVAL);
    assert_non_null(strstr(semail_error_last(), "id '../x'"));

    u = make_user("bob", d1, sizeof(d1), 0);
    assert_int_equal(semail_registry_add(*state, &u), SEMAIL_EINVAL);
}

static void test_registry__update_and_remove(void **state)
{
    char d[128];
    semail_user u = make_user("alice", d, sizeof(d), 10);
    semail_registry *reg = NULL;
    const semail_user *r;

    add_user(*state, "bob", 20);
    u.state = SEMAIL_USER_CREATING;
    assert_int_equal(semail_registry_add(*state, &u), 0);
    u.state = SEMAIL_USER_ACTIVE;
    u.ssh_keys = "ssh-ed25519 AAAA";
    assert_int_equal(semail_registry_update(*state, &u), 0);
    u.uid = 20;
    assert_int_equal(semail_registry_update(*state, &u), SEMAIL_EEXISTS);
    u.login = "nobody";
    assert_int_equal(semail_registry_update(*state, &u), SEMAIL_ENOTFOUND);

    assert_int_equal(semail_registry_load(&reg, *state), 0);
    assert_int_equal(semail_registry_find_address(&r, reg, "alice", "alice.semail.test"), 0);
    assert_string_equal(r->ssh_keys, "ssh-ed25519 AAAA");
    assert_int_equal(r->uid, 10);
    semail_registry_free(reg);

    assert_int_equal(semail_registry_remove(*state, "alice"), 0);
    assert_int_equal(semail_registry_remove(*state, "alice"), SEMAIL_ENOTFOUND);
    assert_int_equal(semail_registry_remove(*state, "../x"), SEMAIL_EINVAL);
    assert_int_equal(semail_registry_load(&reg, *state), 0);
    assert_int_equal(semail_registry_count(reg), 1);
    assert_int_equal(semail_registry_find_login(&r, reg, "alice"), SEMAIL_ENOTFOUND);
    semail_registry_free(reg);
}

static void test_registry__free_uid_skips_used_ones(void **state)
{
    semail_registry *reg = NULL;
    uid_t uid = 0;

    add_user(*state, "a", 100);
    add_user(*state, "b", 102);
    add_user(*state, "c", 101);
    assert_int_equal(semail_registry_load(&reg, *state), 0);
    assert_int_equal(semail_registry_free_uid(&uid, reg, 100, 200), 0);
    assert_int_equal(uid, 103);
    assert_int_equal(semail_registry_free_uid(&uid, reg, 99, 200), 0);
    assert_int_equal(uid, 99);
    assert_int_equal(semail_registry_free_uid(&uid, reg, 100, 102), SEMAIL_EFULL);
    semail_registry_free(reg);
}

static void test_registry__lock_times_out_with_elocked(void **state)
{
    int a = -1, b = -1;
    assert_int_equal(semail__registry_lock(&a, *state, 100), 0);
    assert_int_equal(semail__registry_lock(&b, *state, 100), SEMAIL_ELOCKED);
    assert_int_equal(b, -1);
    semail__registry_unlock(a);
    assert_int_equal(semail__registry_lock(&b, *state, 100), 0);
    semail__registry_unlock(b);
}

/* ---- concurrency --------------------------------------------------------- */

#define WRITERS    4
#define PER_WRITER 12

static void test_registry__concurrent_writers_never_lose_a_record(void **state)
{
    semail_registry *reg = NULL;
    pid_t pids[WRITERS];
    int w, status;

    for (w = 0; w < WRITERS; w++) {
        pids[w] = fork();
        assert_true(pids[w] >= 0);
        if (pids[w] == 0) {
            int i, bad = 0;
            for (i = 0; i < PER_WRITER; i++) {
                char name[32], domain[64];
                semail_user u;
                snprintf(name, sizeof(name), "w%d-%d", w, i);
                u = make_user(name, domain, sizeof(domain), (uid_t)(1000 + w * 100 + i));
                bad |= semail_registry_add(*state, &u) != 0;
            }
            _exit(bad);
        }
    }
    for (w = 0; w < WRITERS; w++) {
        assert_int_equal(waitpid(pids[w], &status, 0), pids[w]);
        assert_true(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    }
    assert_int_equal(semail_registry_load(&reg, *state), 0);
    assert_int_equal(semail_registry_count(reg), WRITERS * PER_WRITER);
    semail_registry_free(reg);
}

static void test_registry__reader_during_writes_sees_complete_files(void **state)
{
    pid_t pid;
    int i, status = 0, changes = 0, done = 0, loads = 0;
    size_t last = 0;

    add_user(*state, "base", 1);
    pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        int bad = 0;
        for (i = 0; i < 150; i++) {
            char name[32];
            snprintf(name, sizeof(name), "u%d", i);
            add_user(*state, name, (uid_t)(100 + i));
            if (i % 3 == 2)
                bad |= semail_registry_remove(*state, name) != 0;
        }
        _exit(bad);
    }
    /* Read for as long as the writer writes. */
    while (!done || loads < 100) {
        semail_registry *reg = NULL;
        const semail_user *r;
        if (!done && waitpid(pid, &status, WNOHANG) == pid)
            done = 1;
        if (semail_registry_load(&reg, *state) != 0)
            fail_msg("load during writes: %s", semail_error_last());
        /* The first record is always there: the file is never partial. */
        if (semail_registry_find_login(&r, reg, "base") != 0)
            fail_msg("a reader saw a registry without 'base' (%zu records)",
                     semail_registry_count(reg));
        changes += semail_registry_count(reg) != last;
        last = semail_registry_count(reg);
        semail_registry_free(reg);
        loads++;
    }
    assert_true(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    assert_true(changes >= 2);
}

static void test_registry__changed_detects_a_rename_of_identical_content(void **state)
{
    semail_registry *reg = NULL;
    char path[512], tmp[512], buf[4096];
    int in, out;
    ssize_t n;

    add_user(*state, "alice", 10);
    assert_int_equal(semail_registry_load(&reg, *state), 0);
    assert_int_equal(semail_registry_changed(reg), 0);

    /* Same bytes, same size, new inode: still a change. */
    snprintf(path, sizeof(path), "%s/registry", (char *)*state);
    snprintf(tmp, sizeof(tmp), "%s/copy", (char *)*state);
    in = open(path, O_RDONLY);
    out = open(tmp, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    assert_true(in >= 0 && out >= 0);
    n = read(in, buf, sizeof(buf));
    assert_true(n > 0);
    assert_int_equal(write(out, buf, (size_t)n), n);
    close(in);
    close(out);
    assert_int_equal(rename(tmp, path), 0);
    assert_int_equal(semail_registry_changed(reg), 1);
    semail_registry_free(reg);

    assert_int_equal(semail_registry_load(&reg, *state), 0);
    assert_int_equal(semail_registry_changed(reg), 0);
    unlink(path);
    assert_int_equal(semail_registry_changed(reg), 1);
    semail_registry_free(reg);
}

struct cache_run {
    semail_registry_cache *cache;
    const char *dir;
    int stop;
    pthread_mutex_t mu;
};

static int run_stopped(struct cache_run *r)
{
    int s;
    pthread_mutex_lock(&r->mu);
    s = r->stop;
    pthread_mutex_unlock(&r->mu);
    return s;
}

static void *cache_reader(void *arg)
{
    struct cache_run *r = arg;
    long bad = 0;
    while (!run_stopped(r)) {
        const semail_registry *reg;
        const semail_user *u;
        size_t i, n;
        if (semail_registry_cache_acquire(&reg, r->cache) != 0) {
            bad++;
            continue;
        }
        bad += semail_registry_find_address(&u, reg, "base", "base.semail.test") != 0;
        n = semail_registry_count(reg);
        for (i = 0; i < n; i++)
            bad += semail_registry_get(reg, i)->login[0] == '\0';
        semail_registry_cache_release(r->cache, reg);
    }
    return (void *)bad;
}

static void *cache_writer(void *arg)
{
    struct cache_run *r = arg;
    int i;
    for (i = 0; i < 25; i++) {
        char name[32], domain[64];
        semail_user u;
        snprintf(name, sizeof(name), "n%d", i);
        u = make_user(name, domain, sizeof(domain), (uid_t)(500 + i));
        if (semail_registry_add(r->dir, &u) != 0)
            return (void *)1;
    }
    return NULL;
}

static void test_registry__cache_serves_threads_while_the_file_changes(void **state)
{
    struct cache_run run = {.dir = *state};
    pthread_t readers[4], writer;
    const semail_registry *reg;
    const semail_user *u;
    void *res;
    int i;

    pthread_mutex_init(&run.mu, NULL);
    add_user(*state, "base", 1);
    assert_int_equal(semail_registry_cache_new(&run.cache, *state), 0);
    for (i = 0; i < 4; i++)
        assert_int_equal(pthread_create(&readers[i], NULL, cache_reader, &run), 0);
    assert_int_equal(pthread_create(&writer, NULL, cache_writer, &run), 0);
    assert_int_equal(pthread_join(writer, &res), 0);
    assert_null(res);

    /* A box added a moment ago is found at once. */
    add_user(*state, "fresh", 999);
    assert_int_equal(semail_registry_cache_acquire(&reg, run.cache), 0);
    assert_int_equal(semail_registry_find_address(&u, reg, "fresh", "fresh.semail.test"), 0);
    assert_int_equal(semail_registry_count(reg), 27);
    semail_registry_cache_release(run.cache, reg);

    pthread_mutex_lock(&run.mu);
    run.stop = 1;
    pthread_mutex_unlock(&run.mu);
    for (i = 0; i < 4; i++) {
        assert_int_equal(pthread_join(readers[i], &res), 0);
        assert_null(res);
    }
    semail_registry_cache_free(run.cache);
    pthread_mutex_destroy(&run.mu);
}

static void test_registry__cache_keeps_the_old_snapshot_when_a_reload_fails(void **state)
{
    semail_registry_cache *cache = NULL;
    const semail_registry *reg, *held;
    const semail_user *u;

    add_user(*state, "alice", 10);
    assert_int_equal(semail_registry_cache_new(&cache, *state), 0);
    assert_int_equal(semail_registry_cache_acquire(&held, cache), 0);

    write_text(*state, "registry", "garbage\n");
    semail_error_clear();
    assert_int_equal(semail_registry_cache_acquire(&reg, cache), 0);
    assert_ptr_equal(reg, held);
    assert_int_equal(semail_error_last_code(), SEMAIL_EINVAL);
    assert_int_equal(semail_registry_find_address(&u, reg, "alice", "alice.semail.test"), 0);
    semail_registry_cache_release(cache, reg);

    /* A good file again: a new snapshot, while the old one is still held. */
    write_text(*state, "registry", "# semail registry v1\n");
    assert_int_equal(semail_registry_cache_acquire(&reg, cache), 0);
    assert_ptr_not_equal(reg, held);
    assert_int_equal(semail_registry_count(reg), 0);
    assert_int_equal(semail_registry_count(held), 1);
    semail_registry_cache_release(cache, held);
    semail_registry_cache_release(cache, reg);
    semail_registry_cache_free(cache);
}

int main(void)
{
#define T(f) cmocka_unit_test_setup_teardown(f, setup_dir, teardown_dir)
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_validate__names),
        cmocka_unit_test(test_validate__domains_and_labels),
        T(test_registry__missing_file_is_an_empty_registry),
        T(test_registry__round_trip_encodes_odd_bytes),
        T(test_registry__unknown_fields_are_ignored),
        T(test_registry__malformed_files_name_the_line),
        T(test_registry__find_address_ignores_case_and_needs_active),
        T(test_registry__add_refuses_what_is_taken),
        T(test_registry__update_and_remove),
        T(test_registry__free_uid_skips_used_ones),
        T(test_registry__lock_times_out_with_elocked),
        T(test_registry__concurrent_writers_never_lose_a_record),
        T(test_registry__reader_during_writes_sees_complete_files),
        T(test_registry__changed_detects_a_rename_of_identical_content),
        T(test_registry__cache_serves_threads_while_the_file_changes),
        T(test_registry__cache_keeps_the_old_snapshot_when_a_reload_fails),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
