/*
 * test_container.c - the container module against a real Docker engine.
 *
 * The first group needs nothing: options, the readers of the engine's JSON.
 * The second starts its own dockerd (own socket, exec root, bridge, no
 * iptables), imports the user image once (the bootstrap is cached in
 * /var/tmp/semail-test-image, the imported image in its data root, so a
 * second run takes seconds), and logs in over SSH on 127.0.0.1. It is
 * skipped, saying why, when not root, or dockerd, debootstrap or ssh is
 * missing, or the engine does not start.
 */
#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <signal.h>
#include <spawn.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <netinet/in.h>
#include <arpa/inet.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>
#include <json-c/json.h>

#include "docker_api.h"
#include "semail/container.h"

#define CACHE_DIR  "/var/tmp/semail-test-image"
#define DATA_ROOT  CACHE_DIR "/docker"
#define BRIDGE     "semailtest0"
#define BRIDGE_NET "10.213.77.1/24"
#define PORT_LOW   23400
#define PORT_HIGH  23449
#define TEST_IMAGE "semail/user-test:latest"
#define UID_ALICE  2001

static char g_dir[64];
static char g_sock[128];
static pid_t g_dockerd = -1;
static int g_lock = -1;
static const char *g_skip;
static semail_container_engine *g_e;
static char g_key1[256], g_key2[256], g_mail[256];

/* ---- helpers -------------------------------------------------------------- */

static void spawn_pathed(pid_t *pid, const char *const argv[], int out_fd)
{
    posix_spawn_file_actions_t fa;
    extern char **environ;

    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
    if (out_fd >= 0) {
        posix_spawn_file_actions_adddup2(&fa, out_fd, 1);
        posix_spawn_file_actions_adddup2(&fa, out_fd, 2);
    }
    if (posix_spawnp(pid, argv[0], &fa, NULL, (char *const *)argv, environ) != 0)
        *pid = -1;
    posix_spawn_file_actions_destroy(&fa);
}

/* Run ARGV, its output (stdout and stderr) into OUT; the exit status, or -1. */
static int run(char *out, size_t n, const char *const argv[])
{
    int p[2], status;
    size_t len = 0;
    ssize_t r;
    pid_t pid;

    if (pipe(p) < 0)
        return -1;
    spawn_pathed(&pid, argv, p[1]);
    close(p[1]);
    while ((r = read(p[0], out + len, n - 1 - len)) > 0 && len + (size_t)r < n - 1)
        len += (size_t)r;
    if (r > 0)
        len += (size_t)r;
    out[len] = '\0';
    close(p[0]);
    if (pid < 0 || waitpid(pid, &status, 0) < 0)
        return -1;
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

static int runq(const char *const argv[])
{
    char out[4096];
    return run(out, sizeof(out), argv);
}

static int have(const char *prog)
{
    char path[256];
    const char *dirs[] = {"/usr/sbin", "/usr/bin", "/sbin", "/bin"};

    for (size_t i = 0; i < 4; i++) {
        snprintf(path, sizeof(path), "%s/%s", dirs[i], prog);
        if (access(path, X_OK) == 0)
            return 1;
    }
    return 0;
}

static void sleep_ms(long ms)
{
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

/* ssh KEY LOGIN@127.0.0.1:PORT COMMAND, retried while sshd is starting. */
static int ssh_run(char *out, size_t n, const char *key, const char *login, int port,
                   const char *cmd)
{
    char dest[64], portstr[16];
    int rc = -1;

    snprintf(dest, sizeof(dest), "%s@127.0.0.1", login);
    snprintf(portstr, sizeof(portstr), "%d", port);
    const char *argv[] = {"ssh",
                          "-i",
                          key,
                          "-p",
                          portstr,
                          "-o",
                          "StrictHostKeyChecking=no",
                          "-o",
                          "UserKnownHostsFile=/dev/null",
                          "-o",
                          "BatchMode=yes",
                          "-o",
                          "ConnectTimeout=3",
                          "-o",
                          "LogLevel=ERROR",
                          "-o",
                          "IdentitiesOnly=yes",
                          dest,
                          cmd,
                          NULL};
    for (int i = 0; i < 40; i++) {
        rc = run(out, n, argv);
        /* 255: ssh could not connect or was refused; sshd may not listen yet. */
        if (rc != 255 || strstr(out, "Permission denied"))
            break;
        sleep_ms(250);
    }
    return rc;
}

static void make_key(char *path, size_t n, const char *name)
{
    snprintf(path, n, "%s/%s", g_dir, name);
    const char *argv[] = {"ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", path, NULL};
    assert_int_equal(runq(argv), 0);
}

static char *read_text(const char *path)
{
    static char buf[4096];
    int fd = open(path, O_RDONLY);
    ssize_t r;

    if (fd < 0)
        return NULL;
    r = read(fd, buf, sizeof(buf) - 1);
    close(fd);
    buf[r > 0 ? r : 0] = '\0';
    return buf;
}

/* GET /containers/NAME/json as a json-c tree. */
static json_object *inspect_json(const char *name)
{
    semail__docker_resp r;
    char path[128];
    json_object *o = NULL;

    semail__docker_resp_init(&r);
    snprintf(path, sizeof(path), "/containers/%s/json", name);
    if (semail__docker_request(g_e, "GET", path, NULL, &r) == 0 && r.status == 200)
        o = json_tokener_parse(r.body.data);
    semail__docker_resp_free(&r);
    return o;
}

static json_object *jget(json_object *o, const char *a, const char *b)
{
    json_object *v = NULL, *w = NULL;

    if (!json_object_object_get_ex(o, a, &v))
        return NULL;
    if (b == NULL)
        return v;
    return json_object_object_get_ex(v, b, &w) ? w : NULL;
}

static semail_container_spec spec_for(const char *login, uid_t uid, const char *mail,
                                      const char *keys)
{
    semail_container_spec s = {0};

    s.login = login;
    s.uid = uid;
    s.gid = uid;
    s.mail_dir = mail;
    s.ssh_keys = keys;
    return s;
}

static char *pubkey(const char *key)
{
    char path[300];
    static char text[2][1024];
    static int which;
    char *t = text[which ^= 1];

    const char *k;
    size_t n;

    snprintf(path, sizeof(path), "%s.pub", key);
    k = read_text(path);
    n = strlen(k);
    assert_true(n < sizeof(text[0]));
    memcpy(t, k, n + 1);
    return t;
}

/* ---- without an engine ------------------------------------------------------ */

static void test_container__options_are_checked(void **state)
{
    semail_container_options o;
    semail_container_engine *e = NULL;

    (void)state;
    semail_container_options_init(&o);
    o.engine = "relative.sock";
    assert_int_equal(semail_container_engine_new(&e, &o), SEMAIL_EINVAL);
    semail_container_options_init(&o);
    o.port_low = 3000;
    o.port_high = 2000;
    assert_int_equal(semail_container_engine_new(&e, &o), SEMAIL_EINVAL);
    semail_container_options_init(&o);
    o.ssh_listen = "localhost";
    assert_int_equal(semail_container_engine_new(&e, &o), SEMAIL_EINVAL);
    o.ssh_listen = "::1";
    o.version = 99;
    assert_int_equal(semail_container_engine_new(&e, &o), SEMAIL_EINVAL);
    o.version = SEMAIL_CONTAINER_OPTIONS_VERSION;
    assert_int_equal(semail_container_engine_new(&e, &o), 0);
    assert_non_null(e);
    semail_container_engine_free(e);
}

static void test_container__config_cpus_become_nano_cpus(void **state)
{
    static const char text[] = "[global]\nstate_dir = /tmp/x\n"
                               "[containers]\ncpus = 1.25\nssh_port_range = 100-200\n"
                               "memory = 64m\npids = 10\n";
    semail_config *cfg = NULL;
    semail_container_engine *e = NULL;

    (void)state;
    assert_int_equal(semail_config_parse(&cfg, text, sizeof(text) - 1, "t"), 0);
    assert_int_equal(semail_container_engine_new_from_config(&e, cfg), 0);
    assert_int_equal(e->nano_cpus, 1250000000u);
    assert_int_equal(e->memory, 64u * 1024 * 1024);
    assert_int_equal(e->pids, 10);
    assert_int_equal(e->port_low, 100);
    assert_int_equal(e->port_high, 200);
    assert_string_equal(e->keys_dir, "/tmp/x/keys");
    semail_container_engine_free(e);
    semail_config_free(cfg);
}

static void test_container__bad_keys_and_logins_are_refused(void **state)
{
    semail_container_options o = SEMAIL_CONTAINER_OPTIONS_INIT;
    semail_container_engine *e = NULL;
    char dir[] = "/tmp/semail-ct-keys-XXXXXX";

    (void)state;
    assert_non_null(mkdtemp(dir));
    o.keys_dir = dir;
    assert_int_equal(semail_container_engine_new(&e, &o), 0);
    assert_int_equal(semail_container_set_keys(e, "../etc", "ssh-ed25519 AAAA"), SEMAIL_EINVAL);
    assert_int_equal(semail_container_set_keys(e, "alice", "ssh-ed25519 AAAA\r\n"), SEMAIL_EINVAL);
    /* No container was ever made for alice: nothing to update. */
    assert_int_equal(semail_container_set_keys(e, "alice", "ssh-ed25519 AAAA"), SEMAIL_ENOTFOUND);
    assert_int_equal(semail_container_remove_keys(e, "alice"), 0);
    semail_container_engine_free(e);
    rmdir(dir);
}

static void test_container__engine_answers_are_read(void **state)
{
    static const char inspect[] =
        "{\"Name\":\"/semail-alice\",\"State\":{\"Status\":\"exited\"},"
        "\"Config\":{\"Labels\":{\"semail.user\":\"alice\",\"semail.ssh_port\":\"22001\","
        "\"semail.spec\":\"v1-00\"}}}";
    static const char list[] = "[{\"Names\":[\"/semail-bob\"],\"State\":\"running\",\"Labels\":{"
                               "\"semail.user\":\"bob\",\"semail.ssh_port\":\"70000\"}},3]";
    static const char progress[] = "{\"status\":\"sha256:ab\"}\r\n{\"errorDetail\":{\"message\":"
                                   "\"no space\"},\"error\":\"no space\"}\r\n";
    semail__docker_container c, *v = NULL;
    size_t n;
    char msg[64];

    (void)state;
    assert_int_equal(semail__docker_parse_inspect(inspect, sizeof(inspect) - 1, &c), 0);
    assert_string_equal(c.name, "semail-alice");
    assert_string_equal(c.user, "alice");
    assert_string_equal(c.state, "exited");
    assert_string_equal(c.spec, "v1-00");
    assert_int_equal(c.port, 22001);
    assert_int_equal(semail__docker_parse_list(list, sizeof(list) - 1, &v, &n), 0);
    assert_int_equal(n, 1); /* the 3 is no container */
    assert_string_equal(v[0].name, "semail-bob");
    assert_int_equal(v[0].port, 0); /* not a port */
    free(v);
    assert_int_equal(semail__docker_parse_list("{}", 2, &v, &n), SEMAIL_EINVAL);
    assert_int_equal(
        semail__docker_parse_progress(progress, sizeof(progress) - 1, msg, sizeof(msg)),
        SEMAIL_EIO);
    assert_string_equal(msg, "no space");
    assert_int_equal(semail__docker_parse_progress(progress, 24, msg, sizeof(msg)), 0);
    assert_int_equal(semail__docker_parse_progress("{\"a\":", 5, msg, sizeof(msg)), SEMAIL_EINVAL);
    semail__docker_parse_message("{\"message\":\"a\\nb\"}", 18, msg, sizeof(msg));
    assert_string_equal(msg, "a b");
}

/* ---- the engine ----------------------------------------------------------- */

static int bridge_up(void)
{
    const char *add[] = {"ip", "link", "add", BRIDGE, "type", "bridge", NULL};
    const char *addr[] = {"ip", "addr", "replace", BRIDGE_NET, "dev", BRIDGE, NULL};
    const char *up[] = {"ip", "link", "set", BRIDGE, "up", NULL};

    runq(add); /* may exist from an interrupted run */
    return runq(addr) == 0 && runq(up) == 0 ? 0 : -1;
}

static int start_dockerd(void)
{
    char host[160], exec_root[128], pidfile[128], log[128];
    int fd;

    snprintf(g_sock, sizeof(g_sock), "%s/d.sock", g_dir);
    snprintf(host, sizeof(host), "unix://%s", g_sock);
    snprintf(exec_root, sizeof(exec_root), "%s/exec", g_dir);
    snprintf(pidfile, sizeof(pidfile), "%s/dockerd.pid", g_dir);
    snprintf(log, sizeof(log), "%s/dockerd.log", g_dir);
    const char *argv[] = {"dockerd",         "--host",      host,      "--data-root",
                          DATA_ROOT,         "--exec-root", exec_root, "--pidfile",
                          pidfile,           "--bridge",    BRIDGE,    "--iptables=false",
                          "--ip-masq=false", NULL};
    if ((fd = open(log, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600)) < 0)
        return -1;
    spawn_pathed(&g_dockerd, argv, fd);
    close(fd);
    return g_dockerd < 0 ? -1 : 0;
}

static int engine_setup(void **state)
{
    semail_container_options o = SEMAIL_CONTAINER_OPTIONS_INIT;
    semail_image_options io = SEMAIL_IMAGE_OPTIONS_INIT;
    char keys[128];
    int err = -1;

    (void)state;
    if (geteuid() != 0)
        return g_skip = "not root", 0;
    if (!have("dockerd") || !have("ssh") || !have("ssh-keygen") || !have("ip") ||
        (!have("debootstrap") && !have("mmdebstrap")))
        return g_skip = "dockerd, ssh, ip or debootstrap missing (apt-get install docker.io "
                        "debootstrap openssh-client iproute2)",
               0;
    mkdir(CACHE_DIR, 0700);
    /* One run at a time owns the data root and the bridge. */
    if ((g_lock = open(CACHE_DIR "/lock", O_RDWR | O_CREAT | O_CLOEXEC, 0600)) < 0 ||
        flock(g_lock, LOCK_EX) < 0)
        return g_skip = "cannot lock " CACHE_DIR, 0;
    snprintf(g_dir, sizeof(g_dir), "/tmp/semail-ct-XXXXXX");
    if (mkdtemp(g_dir) == NULL || bridge_up() < 0 || start_dockerd() < 0)
        return g_skip = "cannot set up the bridge or start dockerd", 0;
    snprintf(keys, sizeof(keys), "%s/keys", g_dir);
    o.engine = g_sock;
    o.image = TEST_IMAGE;
    o.ssh_listen = "127.0.0.1";
    o.port_low = PORT_LOW;
    o.port_high = PORT_HIGH;
    o.memory = 96u * 1024 * 1024;
    o.pids = 64;
    o.nano_cpus = 500000000u;
    o.keys_dir = keys;
    if (semail_container_engine_new(&g_e, &o) < 0)
        return -1;
    for (int i = 0; i < 100 && (err = semail_container_engine_ping(g_e)) < 0; i++)
        sleep_ms(200);
    if (err < 0)
        return g_skip = "dockerd did not answer in 20 s (see its log in /tmp/semail-ct-*)", 0;
    io.work_dir = CACHE_DIR;
    io.reuse_cache = 1;
    io.reuse_image = 0; /* the import is seconds; the entrypoint must be the current one */
    if ((err = semail_image_build(g_e, &io)) < 0) {
        fprintf(stderr, "image build: %s\n", semail_error_last());
        return -1;
    }
    make_key(g_key1, sizeof(g_key1), "key1");
    make_key(g_key2, sizeof(g_key2), "key2");
    snprintf(g_mail, sizeof(g_mail), "%s/mail-alice", g_dir);
    if (mkdir(g_mail, 0700) < 0 || chown(g_mail, UID_ALICE, UID_ALICE) < 0)
        return -1;
    return 0;
}

static int engine_teardown(void **state)
{
    static const char *const logins[] = {"alice", "bob", "carol", "mallory"};
    const char *del[] = {"ip", "link", "del", BRIDGE, NULL};
    int status;

    (void)state;
    if (g_e) {
        for (size_t i = 0; i < 4; i++)
            semail_container_delete(g_e, logins[i]);
        semail__docker_resp r;
        semail__docker_resp_init(&r);
        semail__docker_request(g_e, "DELETE", "/containers/semail-mallory?force=1", NULL, &r);
        semail__docker_resp_free(&r);
        semail_container_engine_free(g_e);
    }
    if (g_dockerd > 0) {
        kill(g_dockerd, SIGTERM);
        waitpid(g_dockerd, &status, 0);
    }
    if (g_dir[0]) {
        runq(del);
        const char *rm[] = {"rm", "-rf", "--one-file-system", g_dir, NULL};
        runq(rm);
    }
    if (g_lock >= 0)
        close(g_lock);
    return 0;
}

#define NEED_ENGINE()                                                                              \
    do {                                                                                           \
        if (g_skip) {                                                                              \
            fprintf(stderr, "skipped: %s\n", g_skip);                                              \
            skip();                                                                                \
        }                                                                                          \
    } while (0)

static void test_container__ssh_login_gets_the_uid_and_the_mail_mount(void **state)
{
    semail_container_spec s = spec_for("alice", UID_ALICE, g_mail, pubkey(g_key1));
    semail_container_info info;
    char out[4096], path[300];
    struct stat st;
    int port = 0;

    (void)state;
    NEED_ENGINE();
    assert_int_equal(semail_container_create(g_e, &s, &port), 0);
    assert_in_range(port, PORT_LOW, PORT_HIGH);
    assert_int_equal(ssh_run(out, sizeof(out), g_key1, "alice", port,
                             "id -u; id -g; echo hello > ~/mail/from-inside; hostname"),
                     0);
    assert_string_equal(out, "2001\n2001\nalice\n");
    snprintf(path, sizeof(path), "%s/from-inside", g_mail);
    assert_int_equal(stat(path, &st), 0);
    assert_int_equal(st.st_uid, UID_ALICE);
    assert_string_equal(read_text(path), "hello\n");
    assert_int_equal(semail_container_status(&info, g_e, "alice"), 0);
    assert_int_equal(info.state, SEMAIL_CONTAINER_RUNNING);
    assert_int_equal(info.ssh_port, port);
    /* Root cannot log in, and neither can a password. */
    assert_int_not_equal(ssh_run(out, sizeof(out), g_key1, "root", port, "true"), 0);
}

static void test_container__limits_and_privileges_are_applied(void **state)
{
    json_object *o, *hc;
    char out[4096];
    int port;
    semail_container_info info;

    (void)state;
    NEED_ENGINE();
    assert_int_equal(semail_container_status(&info, g_e, "alice"), 0);
    port = info.ssh_port;
    assert_non_null(o = inspect_json("semail-alice"));
    hc = jget(o, "HostConfig", NULL);
    assert_int_equal(json_object_get_int64(jget(hc, "Memory", NULL)), 96 * 1024 * 1024);
    assert_int_equal(json_object_get_int64(jget(hc, "PidsLimit", NULL)), 64);
    assert_int_equal(json_object_get_int64(jget(hc, "NanoCpus", NULL)), 500000000);
    assert_false(json_object_get_boolean(jget(hc, "Privileged", NULL)));
    assert_string_equal(json_object_get_string(jget(hc, "RestartPolicy", "Name")),
                        "unless-stopped");
    assert_string_equal(
        json_object_get_string(json_object_array_get_idx(jget(hc, "SecurityOpt", NULL), 0)),
        "no-new-privileges");
    assert_string_equal(
        json_object_get_string(json_object_array_get_idx(jget(hc, "CapDrop", NULL), 0)), "ALL");
    json_object_put(o);
    /* The kernel enforces them: cgroup v1 files seen from inside, and no capabilities. */
    assert_int_equal(ssh_run(out, sizeof(out), g_key1, "alice", port,
                             "cat /sys/fs/cgroup/memory/memory.limit_in_bytes "
                             "/sys/fs/cgroup/pids/pids.max; grep CapBnd /proc/self/status"),
                     0);
    assert_non_null(strstr(out, "100663296\n64\n"));
    /* CHOWN SETGID SETUID SYS_CHROOT AUDIT_WRITE: bits 0, 6, 7, 18, 29. */
    assert_non_null(strstr(out, "CapBnd:\t00000000200400c1\n"));
}

static void test_container__create_again_finishes_the_job(void **state)
{
    semail_container_spec s = spec_for("alice", UID_ALICE, g_mail, pubkey(g_key1));
    semail_container_info info;
    char out[4096];
    long status;
    int port = 0, port2 = 0;
    semail__docker_resp r;

    (void)state;
    NEED_ENGINE();
    assert_int_equal(semail_container_create(g_e, &s, &port), 0);
    assert_int_equal(semail_container_create(g_e, &s, &port2), 0);
    assert_int_equal(port, port2);
    /* Stopped (a crash half-way, a reboot): create starts it again. */
    semail__docker_resp_init(&r);
    assert_int_equal(
        semail__docker_request(g_e, "POST", "/containers/semail-alice/stop?t=1", NULL, &r), 0);
    status = r.status;
    semail__docker_resp_free(&r);
    assert_int_equal(status, 204);
    assert_int_equal(semail_container_status(&info, g_e, "alice"), 0);
    assert_int_equal(info.state, SEMAIL_CONTAINER_STOPPED);
    assert_int_equal(semail_container_create(g_e, &s, &port2), 0);
    assert_int_equal(port2, port);
    assert_int_equal(semail_container_status(&info, g_e, "alice"), 0);
    assert_int_equal(info.state, SEMAIL_CONTAINER_RUNNING);
    /* The entrypoint copes with a person it made before. */
    assert_int_equal(ssh_run(out, sizeof(out), g_key1, "alice", port, "id -u"), 0);
    assert_string_equal(out, "2001\n");
    /* Other settings: not silently replaced. */
    s.uid = UID_ALICE + 1;
    assert_int_equal(semail_container_create(g_e, &s, &port2), SEMAIL_EEXISTS);
}

static void test_container__new_keys_reach_the_running_container(void **state)
{
    semail_container_info info;
    char out[4096];

    (void)state;
    NEED_ENGINE();
    assert_int_equal(semail_container_status(&info, g_e, "alice"), 0);
    assert_int_not_equal(ssh_run(out, sizeof(out), g_key2, "alice", info.ssh_port, "true"), 0);
    assert_int_equal(semail_container_set_keys(g_e, "alice", pubkey(g_key2)), 0);
    assert_int_equal(ssh_run(out, sizeof(out), g_key2, "alice", info.ssh_port, "id -u"), 0);
    assert_string_equal(out, "2001\n");
    assert_int_not_equal(ssh_run(out, sizeof(out), g_key1, "alice", info.ssh_port, "true"), 0);
    assert_int_equal(semail_container_set_keys(g_e, "alice", pubkey(g_key1)), 0);
}

static int always_free(const char *addr, unsigned int port, void *payload)
{
    (void)addr, (void)port, (void)payload;
    return 1;
}

/* A listening socket on 127.0.0.1:PORT (taken by "another program"). */
static int occupy(unsigned int port)
{
    struct sockaddr_in a = {0};
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0), one = 1;

    a.sin_family = AF_INET;
    a.sin_port = htons((uint16_t)port);
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    if (bind(fd, (struct sockaddr *)&a, sizeof(a)) < 0 || listen(fd, 1) < 0) {
        close(fd);
        return -1;
    }
    return fd;
}

static void test_container__a_port_taken_at_start_is_replaced(void **state)
{
    char mail[300];
    semail_container_spec s;
    semail_container_info *list = NULL, info;
    size_t n, i;
    int port = 0, fd1, fd2, found = 0;

    (void)state;
    NEED_ENGINE();
    snprintf(mail, sizeof(mail), "%s/mail-bob", g_dir);
    assert_int_equal(mkdir(mail, 0700), 0);
    assert_int_equal(chown(mail, 2002, 2002), 0);
    s = spec_for("bob", 2002, mail, pubkey(g_key1));
    /* The check "can it be bound" says yes, but the engine finds it taken at start. */
    semail__container_set_port_probe(g_e, always_free, NULL);
    assert_int_equal(semail_container_status(&info, g_e, "alice"), 0);
    unsigned int first = info.ssh_port == PORT_LOW ? PORT_LOW + 1 : PORT_LOW;
    unsigned int second = first + 1 == (unsigned int)info.ssh_port ? first + 2 : first + 1;
    assert_true((fd1 = occupy(first)) >= 0);
    assert_true((fd2 = occupy(second)) >= 0);
    assert_int_equal(semail_container_create(g_e, &s, &port), 0);
    semail__container_set_port_probe(g_e, NULL, NULL);
    close(fd1);
    close(fd2);
    assert_true(port != (int)first && port != (int)second && port != info.ssh_port);
    assert_int_equal(semail_container_status(&info, g_e, "bob"), 0);
    assert_int_equal(info.state, SEMAIL_CONTAINER_RUNNING);
    /* The failed attempts left nothing behind: one bob, one alice. */
    assert_int_equal(semail_container_list(&list, &n, g_e), 0);
    for (i = 0; i < n; i++)
        found += strcmp(list[i].login, "bob") == 0;
    assert_int_equal(found, 1);
    semail_container_list_free(list);
    /* A fixed port that is taken is an error, and nothing is left. */
    assert_int_equal(semail_container_delete(g_e, "bob"), 0);
    assert_true((fd1 = occupy(PORT_HIGH)) >= 0);
    s.ssh_port = PORT_HIGH;
    assert_int_equal(semail_container_create(g_e, &s, &port), SEMAIL_EEXISTS);
    close(fd1);
    assert_int_equal(semail_container_status(&info, g_e, "bob"), 0);
    assert_int_equal(info.state, SEMAIL_CONTAINER_ABSENT);
}

static void test_container__foreign_containers_are_left_alone(void **state)
{
    static const char body[] = "{\"Image\":\"" TEST_IMAGE "\",\"Cmd\":[\"true\"]}";
    semail_container_spec s = spec_for("mallory", 2003, g_mail, NULL);
    semail_container_info info;
    semail__docker_resp r;
    long status;

    (void)state;
    NEED_ENGINE();
    semail__docker_resp_init(&r);
    assert_int_equal(
        semail__docker_request(g_e, "POST", "/containers/create?name=semail-mallory", body, &r), 0);
    status = r.status;
    semail__docker_resp_free(&r);
    assert_int_equal(status, 201);
    assert_int_equal(semail_container_create(g_e, &s, NULL), SEMAIL_EEXISTS);
    assert_int_equal(semail_container_delete(g_e, "mallory"), SEMAIL_EPERM);
    assert_int_equal(semail_container_status(&info, g_e, "mallory"), SEMAIL_EPERM);
}

static void test_container__delete_removes_it_and_is_idempotent(void **state)
{
    semail_container_info info, *list = NULL;
    size_t n, i;

    (void)state;
    NEED_ENGINE();
    assert_int_equal(semail_container_delete(g_e, "alice"), 0);
    assert_int_equal(semail_container_status(&info, g_e, "alice"), 0);
    assert_int_equal(info.state, SEMAIL_CONTAINER_ABSENT);
    assert_int_equal(semail_container_delete(g_e, "alice"), 0);
    assert_int_equal(semail_container_list(&list, &n, g_e), 0);
    for (i = 0; i < n; i++)
        assert_string_not_equal(list[i].login, "alice");
    semail_container_list_free(list);
    assert_int_equal(semail_container_remove_keys(g_e, "alice"), 0);
    assert_int_equal(semail_container_set_keys(g_e, "alice", ""), SEMAIL_ENOTFOUND);
}

int main(void)
{
    const struct CMUnitTest plain[] = {
        cmocka_unit_test(test_container__options_are_checked),
        cmocka_unit_test(test_container__config_cpus_become_nano_cpus),
        cmocka_unit_test(test_container__bad_keys_and_logins_are_refused),
        cmocka_unit_test(test_container__engine_answers_are_read),
    };
    const struct CMUnitTest engine[] = {
        cmocka_unit_test(test_container__ssh_login_gets_the_uid_and_the_mail_mount),
        cmocka_unit_test(test_container__limits_and_privileges_are_applied),
        cmocka_unit_test(test_container__create_again_finishes_the_job),
        cmocka_unit_test(test_container__new_keys_reach_the_running_container),
        cmocka_unit_test(test_container__a_port_taken_at_start_is_replaced),
        cmocka_unit_test(test_container__foreign_containers_are_left_alone),
        cmocka_unit_test(test_container__delete_removes_it_and_is_idempotent),
    };
    int failed = cmocka_run_group_tests_name("container", plain, NULL, NULL);

    return failed +
           cmocka_run_group_tests_name("container_engine", engine, engine_setup, engine_teardown);
}
