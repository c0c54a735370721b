/*
 * test_config.c - the configuration file: syntax, every value type, the
 * defaults (also the derived ones), and error messages that name the file,
 * the line and the key.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "semail/config.h"

static semail_config *parse_ok(const char *text)
{
    semail_config *cfg = NULL;
    int err = semail_config_parse(&cfg, text, strlen(text), "t.conf");
    if (err != 0)
        fail_msg("parse failed: %s", semail_error_last());
    assert_non_null(cfg);
    return cfg;
}

/* Parse TEXT, expect SEMAIL_ECONFIG, and check every NEEDLE is in the message. */
static void parse_fails(const char *text, ...)
{
    semail_config *cfg = NULL;
    const char *needle;
    va_list ap;

    assert_int_equal(semail_config_parse(&cfg, text, strlen(text), "t.conf"), SEMAIL_ECONFIG);
    assert_null(cfg);
    va_start(ap, text);
    while ((needle = va_arg(ap, const char *)) != NULL) {
        if (strstr(semail_error_last(), needle) == NULL)
            fail_msg("message '%s' lacks '%s'", semail_error_last(), needle);
    }
    va_end(ap);
}

/* One key in one section, expected good or bad. */
static void value_ok(const char *section, const char *key, const char *value)
{
    char text[8192];
    semail_config *cfg;
    snprintf(text, sizeof(text), "[%s]\n%s = %s\n", section, key, value);
    cfg = parse_ok(text);
    semail_config_free(cfg);
}

static void value_bad(const char *section, const char *key, const char *value)
{
    char text[8192], where[128];
    snprintf(text, sizeof(text), "# c\n[%s]\n%s = %s\n", section, key, value);
    snprintf(where, sizeof(where), "key '%s' in [%s]", key, section);
    parse_fails(text, "t.conf:3:", where, NULL);
}

static void test_config__empty_text_gives_every_default(void **state)
{
    semail_config *cfg = parse_ok("");
    uint64_t v, lo, hi;
    int b;

    assert_string_equal(semail_config_get(cfg, "global", "hostname"), "mx.semail.test");
    assert_string_equal(semail_config_get(cfg, "global", "domain"), "semail.test");
    assert_string_equal(semail_config_get(cfg, "global", "state_dir"), "/var/lib/semail");
    assert_string_equal(semail_config_get(cfg, "global", "mail_root"), "/var/lib/semail/mail");
    assert_string_equal(semail_config_get(cfg, "global", "user"), "semail");
    assert_string_equal(semail_config_get(cfg, "global", "log"), "stderr");
    assert_int_equal(semail_config_get_range(cfg, "global", "uid_range", &lo, &hi), 0);
    assert_int_equal(lo, 20000);
    assert_int_equal(hi, 29999);
    assert_string_equal(semail_config_get(cfg, "inbound", "listen"), "[::]:25, 0.0.0.0:25");
    assert_int_equal(semail_config_get_size(cfg, "inbound", "max_message_size", &v), 0);
    assert_int_equal(v, 52428800);
    assert_int_equal(semail_config_get_uint(cfg, "inbound", "max_recipients", &v), 0);
    assert_int_equal(v, 100);
    assert_int_equal(semail_config_get_uint(cfg, "inbound", "max_connections", &v), 0);
    assert_int_equal(v, 1000);
    assert_int_equal(semail_config_get_uint(cfg, "inbound", "max_connections_per_client", &v), 0);
    assert_int_equal(v, 20);
    assert_int_equal(semail_config_get_duration_ms(cfg, "inbound", "command_timeout", &v), 0);
    assert_int_equal(v, 300000);
    assert_int_equal(semail_config_get_duration_ms(cfg, "inbound", "data_timeout", &v), 0);
    assert_int_equal(v, 600000);
    assert_int_equal(semail_config_get_uint(cfg, "inbound", "max_errors", &v), 0);
    assert_int_equal(v, 20);
    assert_string_equal(semail_config_get(cfg, "outbound", "listen"), "[::]:587");
    assert_string_equal(semail_config_get(cfg, "outbound", "listen_tls"), "[::]:465");
    assert_string_equal(semail_config_get(cfg, "outbound", "tls_cert"), "/etc/semail/tls.crt");
    assert_string_equal(semail_config_get(cfg, "outbound", "tls_key"), "/etc/semail/tls.key");
    assert_string_equal(semail_config_get(cfg, "outbound", "trusted_networks"),
                        "127.0.0.0/8, ::1/128");
    assert_string_equal(semail_config_get(cfg, "outbound", "resolver"), "");
    assert_int_equal(semail_config_get_uint(cfg, "outbound", "remote_port", &v), 0);
    assert_int_equal(v, 25);
    assert_int_equal(semail_config_get_duration_ms(cfg, "outbound", "max_queue_lifetime", &v), 0);
    assert_int_equal(v, 5ull * 86400 * 1000);
    assert_int_equal(semail_config_get_bool(cfg, "outbound", "allow_plaintext_auth", &b), 0);
    assert_int_equal(b, 0);
    assert_string_equal(semail_config_get(cfg, "storage", "backend"), "image");
    assert_string_equal(semail_config_get(cfg, "storage", "image_dir"), "/var/lib/semail/images");
    assert_string_equal(semail_config_get(cfg, "storage", "lvm_vg"), "semail");
    assert_int_equal(semail_config_get_size(cfg, "storage", "default_size", &v), 0);
    assert_int_equal(v, 1ull << 30);
    assert_int_equal(semail_config_get_bool(cfg, "containers", "enabled", &b), 0);
    assert_int_equal(b, 1);
    assert_string_equal(semail_config_get(cfg, "containers", "engine"), "/run/docker.sock");
    assert_string_equal(semail_config_get(cfg, "containers", "image"), "semail/user:latest");
    assert_string_equal(semail_config_get(cfg, "containers", "ssh_listen"), "0.0.0.0");
    assert_int_equal(semail_config_get_range(cfg, "containers", "ssh_port_range", &lo, &hi), 0);
    assert_int_equal(lo, 22000);
    assert_int_equal(hi, 22999);
    assert_int_equal(semail_config_get_size(cfg, "containers", "memory", &v), 0);
    assert_int_equal(v, 256ull << 20);
    assert_int_equal(semail_config_get_uint(cfg, "containers", "pids", &v), 0);
    assert_int_equal(v, 256);
    assert_string_equal(semail_config_get(cfg, "containers", "cpus"), "0.5");
    assert_int_equal(semail_config_get_bool(cfg, "dns", "enabled", &b), 0);
    assert_int_equal(b, 1);
    assert_string_equal(semail_config_get(cfg, "dns", "server"), "127.0.0.1:53");
    assert_string_equal(semail_config_get(cfg, "dns", "zone"), "semail.test");
    assert_string_equal(semail_config_get(cfg, "dns", "tsig_key"), "/etc/semail/tsig.key");
    assert_string_equal(semail_config_get(cfg, "dns", "mx_host"), "mx.semail.test");
    assert_string_equal(semail_config_get(cfg, "ldap", "uri"), "ldap://127.0.0.1:389");
    assert_string_equal(semail_config_get(cfg, "ldap", "base"), "ou=people,dc=semail,dc=test");
    assert_string_equal(semail_config_get(cfg, "ldap", "filter"), "(uid=%u)");
    assert_string_equal(semail_config_get(cfg, "ldap", "bind_dn"), "");
    assert_string_equal(semail_config_get(cfg, "ldap", "ca_file"), "");
    assert_int_equal(semail_config_has_section(cfg, "ldap"), 0);
    assert_string_equal(semail_config_path(cfg), "t.conf");
    semail_config_free(cfg);
}

static void test_config__derived_defaults_follow_global(void **state)
{
    semail_config *cfg = parse_ok("[global]\nhostname = mail.example.org\ndomain = example.org\n");
    assert_string_equal(semail_config_get(cfg, "dns", "zone"), "example.org");
    assert_string_equal(semail_config_get(cfg, "dns", "mx_host"), "mail.example.org");
    semail_config_free(cfg);

    cfg = parse_ok("[dns]\nzone = other.test\n[global]\ndomain = example.org\n");
    assert_string_equal(semail_config_get(cfg, "dns", "zone"), "other.test");
    semail_config_free(cfg);
}

static void test_config__comments_whitespace_and_crlf(void **state)
{
    semail_config *cfg = parse_ok("# a comment\n"
                                  "; another\n"
                                  "\n"
                                  "   [ global ]   # trailing comment\r\n"
                                  "\thostname\t=\tmx.example.org   # greeting name\r\n"
                                  "user =                 # empty: stay root\n"
                                  "[ldap]\n"
                                  "filter = (&(objectClass=person)(uid=%u))\n"
                                  "base = ou=a#b,dc=x\n");
    assert_string_equal(semail_config_get(cfg, "global", "hostname"), "mx.example.org");
    assert_string_equal(semail_config_get(cfg, "global", "user"), "");
    assert_string_equal(semail_config_get(cfg, "ldap", "filter"),
                        "(&(objectClass=person)(uid=%u))");
    /* A '#' inside a value (no space before it) is part of the value. */
    assert_string_equal(semail_config_get(cfg, "ldap", "base"), "ou=a#b,dc=x");
    assert_int_equal(semail_config_has_section(cfg, "ldap"), 1);
    assert_int_equal(semail_config_has_section(cfg, "dns"), 0);
    assert_int_equal(semail_config_has_section(cfg, "nope"), 0);
    semail_config_free(cfg);
}

static void test_config__sizes_in_every_form(void **state)
{
    static const struct {
        const char *text;
        uint64_t bytes;
    } cases[] = {{"0", 0},           {"52428800", 52428800}, {"64k", 64 << 10},
                 {"64K", 64 << 10},  {"256m", 256 << 20},    {"1G", 1ull << 30},
                 {"2g", 2ull << 30}, {"1t", 1ull << 40},     {"3T", 3ull << 40}};
    size_t i;
    for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        char text[128];
        uint64_t v = 99;
        semail_config *cfg;
        snprintf(text, sizeof(text), "[storage]\ndefault_size = %s\n", cases[i].text);
        cfg = parse_ok(text);
        assert_int_equal(semail_config_get_size(cfg, "storage", "default_size", &v), 0);
        assert_int_equal(v, cases[i].bytes);
        semail_config_free(cfg);
    }
    value_bad("storage", "default_size", "1x");
    value_bad("storage", "default_size", "G");
    value_bad("storage", "default_size", "-1");
    value_bad("storage", "default_size", "1.5G");
    value_bad("storage", "default_size", "99999999999999999999999");
    value_bad("storage", "default_size", "17179869184T");
}

static void test_config__durations_and_lists(void **state)
{
    semail_config *cfg = parse_ok("[inbound]\ncommand_timeout = 30\ndata_timeout = 2h\n"
                                  "[outbound]\nretry_schedule = 1s,2m ,, 3h, 1d\n");
    uint64_t v;
    char **list;
    size_t n;

    assert_int_equal(semail_config_get_duration_ms(cfg, "inbound", "command_timeout", &v), 0);
    assert_int_equal(v, 30000);
    assert_int_equal(semail_config_get_duration_ms(cfg, "inbound", "data_timeout", &v), 0);
    assert_int_equal(v, 7200000);
    assert_int_equal(semail_config_get_list(cfg, "outbound", "retry_schedule", &list, &n), 0);
    assert_int_equal(n, 4);
    assert_string_equal(list[0], "1s");
    assert_string_equal(list[1], "2m");
    assert_string_equal(list[3], "1d");
    assert_null(list[4]);
    semail_config_list_free(list);
    assert_int_equal(semail_config_get_list(cfg, "outbound", "resolver", &list, &n), 0);
    assert_int_equal(n, 0);
    assert_null(list[0]);
    semail_config_list_free(list);
    semail_config_free(cfg);

    value_bad("inbound", "command_timeout", "5x");
    value_bad("inbound", "command_timeout", "m");
    value_bad("outbound", "retry_schedule", "5m, 0, 1h");
    value_bad("outbound", "retry_schedule", "5m, soon");
    value_bad("outbound", "retry_schedule", ",");
}

static void test_config__booleans_in_every_spelling(void **state)
{
    static const char *const yes[] = {"yes", "YES", "true", "on", "1"};
    static const char *const no[] = {"no", "False", "off", "0"};
    size_t i;
    for (i = 0; i < 5 + 4; i++) {
        char text[64];
        int b = -1;
        semail_config *cfg;
        snprintf(text, sizeof(text), "[dns]\nenabled = %s\n", i < 5 ? yes[i] : no[i - 5]);
        cfg = parse_ok(text);
        assert_int_equal(semail_config_get_bool(cfg, "dns", "enabled", &b), 0);
        assert_int_equal(b, i < 5 ? 1 : 0);
        semail_config_free(cfg);
    }
    value_bad("dns", "enabled", "maybe");
    value_bad("dns", "enabled", "2");
}

static void test_config__listen_lists(void **state)
{
    value_ok("inbound", "listen", "[::]:25, 0.0.0.0:25, 127.0.0.1:2525");
    value_ok("inbound", "listen", "localhost:25");
    value_ok("inbound", "listen", "[::1]:0");
    value_ok("outbound", "listen_tls", "");
    value_bad("inbound", "listen", "");
    value_bad("inbound", "listen", "::1:25");
    value_bad("inbound", "listen", "[::1]25");
    value_bad("inbound", "listen", "[zz::1]:25");
    value_bad("inbound", "listen", "0.0.0.0:65536");
    value_bad("inbound", "listen", "0.0.0.0:-1");
    value_bad("inbound", "listen", "0.0.0.0");
    value_bad("inbound", "listen", "0.0.0.0:25, bad_host!:25");
    value_ok("outbound", "resolver", "127.0.0.1:5353");
    value_bad("outbound", "resolver", "127.0.0.1");
}

static void test_config__addresses_cidrs_ranges_and_numbers(void **state)
{
    value_ok("outbound", "trusted_networks", "10.0.0.0/8, fd00::/8, ::1, 192.0.2.1");
    value_bad("outbound", "trusted_networks", "10.0.0.0/33");
    value_bad("outbound", "trusted_networks", "::/129");
    value_bad("outbound", "trusted_networks", "example.org/8");
    value_ok("containers", "ssh_listen", "::");
    value_bad("containers", "ssh_listen", "host.example");
    value_ok("containers", "ssh_port_range", "22000-22000");
    value_bad("containers", "ssh_port_range", "23000-22000");
    value_bad("containers", "ssh_port_range", "22000-70000");
    value_bad("containers", "ssh_port_range", "22000");
    value_bad("global", "uid_range", "0-100");
    value_bad("global", "uid_range", "30000-20000");
    value_ok("outbound", "remote_port", "2525");
    value_bad("outbound", "remote_port", "65536");
    value_bad("inbound", "max_recipients", "ten");
    value_bad("inbound", "max_recipients", "-5");
    value_ok("containers", "cpus", "2");
    value_ok("containers", "cpus", "0.25");
    value_bad("containers", "cpus", "1.");
    value_bad("containers", "cpus", "half");
}

static void test_config__strings_paths_enums_and_ldap(void **state)
{
    value_ok("global", "hostname", "MX.Example.org");
    value_bad("global", "hostname", "-bad.example");
    value_bad("global", "hostname", "a..b");
    value_bad("global", "hostname", "under_score.example");
    value_bad("global", "state_dir", "relative/dir");
    value_bad("global", "state_dir", "");
    value_ok("outbound", "tls_cert", "");
    value_bad("global", "user", "se mail");
    value_ok("global", "log", "syslog");
    value_bad("global", "log", "stdout");
    value_ok("storage", "backend", "directory");
    value_ok("storage", "backend", "lvm");
    value_bad("storage", "backend", "zfs");
    value_bad("storage", "backend", "image|lvm");
    value_ok("ldap", "uri", "ldaps://ldap.example.org:636");
    value_ok("ldap", "uri", "ldap://[::1]:389/");
    value_bad("ldap", "uri", "http://ldap.example.org");
    value_bad("ldap", "uri", "ldap://");
    value_bad("ldap", "filter", "(uid=bob)");
    value_bad("ldap", "filter", "((uid=%u)");
    value_ok("ldap", "bind_dn", "uid=%u,ou=people,dc=x");
    value_bad("ldap", "bind_dn", "uid=admin,dc=x");
    parse_fails("[ldap]\nfilter =\n", "t.conf:2:", "key 'filter' in [ldap]", NULL);
}

static void test_config__errors_name_file_line_and_key(void **state)
{
    parse_fails("[global]\n\nnosuch = 1\n", "t.conf:3:", "key 'nosuch' in [global]", "unknown key",
                NULL);
    parse_fails("[global]\nhostname = a.test\nhostname = b.test\n",
                "t.conf:3:", "key 'hostname' in [global]", "duplicated", "line 2", NULL);
    parse_fails("[global]\njust words\n", "t.conf:2:", "key 'just words'", "'='", NULL);
    parse_fails("hostname = a.test\n", "t.conf:1:", "key 'hostname'", "outside a section", NULL);
    parse_fails("[bogus]\n", "t.conf:1:", "unknown section [bogus]", NULL);
    parse_fails("[global\n", "t.conf:1:", NULL);
    parse_fails("[global]\n= x\n", "t.conf:2:", NULL);
    parse_fails("[inbound]\nmax_connections = 10\nmax_connections_per_client = 11\n",
                "t.conf:3:", "key 'max_connections_per_client' in [inbound]", NULL);
}

static void test_config__overlong_line_and_nul_are_refused(void **state)
{
    size_t n = 5000;
    char *text = malloc(n + 32);
    semail_config *cfg = NULL;

    assert_non_null(text);
    memcpy(text, "[global]\nuser = ", 16);
    memset(text + 16, 'a', n);
    text[16 + n] = '\n';
    text[17 + n] = '\0';
    parse_fails(text, "t.conf:2:", "longer than", NULL);
    free(text);
    assert_int_equal(semail_config_parse(&cfg, "[global]\nuser = a\0b\n", 20, "t.conf"),
                     SEMAIL_ECONFIG);
    assert_non_null(strstr(semail_error_last(), "t.conf:2:"));
}

static void test_config__load_reads_a_file_and_reports_a_missing_one(void **state)
{
    char path[] = "/tmp/semail-test-config-XXXXXX";
    int fd = mkstemp(path);
    semail_config *cfg = NULL;
    const char text[] = "[global]\ndomain = file.test\n[storage]\nbackend = lvm # x\n";

    assert_true(fd >= 0);
    assert_int_equal(write(fd, text, sizeof(text) - 1), (ssize_t)(sizeof(text) - 1));
    close(fd);
    assert_int_equal(semail_config_load(&cfg, path), 0);
    assert_string_equal(semail_config_get(cfg, "dns", "zone"), "file.test");
    assert_string_equal(semail_config_get(cfg, "storage", "backend"), "lvm");
    assert_string_equal(semail_config_path(cfg), path);
    semail_config_free(cfg);
    unlink(path);

    assert_int_equal(semail_config_load(&cfg, path), SEMAIL_ENOTFOUND);
    assert_null(cfg);
    assert_non_null(strstr(semail_error_last(), path));
    assert_non_null(strstr(semail_error_last(), "no such file"));
}

static void test_config__getters_refuse_unknown_keys_and_wrong_types(void **state)
{
    semail_config *cfg = parse_ok("");
    uint64_t v, lo, hi;
    int b;
    char **list;

    assert_null(semail_config_get(cfg, "global", "nosuch"));
    assert_int_equal(semail_config_get_size(cfg, "global", "nosuch", &v), SEMAIL_ENOTFOUND);
    assert_int_equal(semail_config_get_uint(cfg, "nosuch", "x", &v), SEMAIL_ENOTFOUND);
    assert_int_equal(semail_config_get_list(cfg, "x", "y", &list, NULL), SEMAIL_ENOTFOUND);
    assert_int_equal(semail_config_get_bool(cfg, "global", "hostname", &b), SEMAIL_EINVAL);
    assert_int_equal(semail_config_get_uint(cfg, "global", "hostname", &v), SEMAIL_EINVAL);
    assert_int_equal(semail_config_get_range(cfg, "global", "hostname", &lo, &hi), SEMAIL_EINVAL);
    assert_int_equal(semail_config_get_duration_ms(cfg, "global", "domain", &v), SEMAIL_EINVAL);
    semail_config_free(cfg);
    semail_config_free(NULL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_config__empty_text_gives_every_default),
        cmocka_unit_test(test_config__derived_defaults_follow_global),
        cmocka_unit_test(test_config__comments_whitespace_and_crlf),
        cmocka_unit_test(test_config__sizes_in_every_form),
        cmocka_unit_test(test_config__durations_and_lists),
        cmocka_unit_test(test_config__booleans_in_every_spelling),
        cmocka_unit_test(test_config__listen_lists),
        cmocka_unit_test(test_config__addresses_cidrs_ranges_and_numbers),
        cmocka_unit_test(test_config__strings_paths_enums_and_ldap),
        cmocka_unit_test(test_config__errors_name_file_line_and_key),
        cmocka_unit_test(test_config__overlong_line_and_nul_are_refused),
        cmocka_unit_test(test_config__load_reads_a_file_and_reports_a_missing_one),
        cmocka_unit_test(test_config__getters_refuse_unknown_keys_and_wrong_types),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
