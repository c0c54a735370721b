/*
 * server_tls.c - TLS for the server runtime (RFC 8314 implicit TLS, the
 * port 465 style): the context built from the certificate and key files,
 * and the TLS side of one connection (handshake, read, write, close) over
 * its non-blocking socket.
 *
 * Contract: the context is built once, in semail_server_new(), and only
 * read afterwards (OpenSSL allows SSL_new() on a shared context from any
 * thread). It accepts TLS 1.2 and later, forward-secret AEAD or CBC cipher
 * suites for TLS 1.2 (OpenSSL's defaults for TLS 1.3), at security level 2,
 * with no renegotiation, no compression and no server-side session cache
 * (tickets still resume sessions, without state kept per client). Every
 * step here returns at once: a byte count, or what it waits for
 * (SERVER_IO_WANT_READ/WRITE), and server_conn.c does the waiting. SSL
 * objects exist only on TLS connections, and their buffers are released
 * while a connection is idle (SSL_MODE_RELEASE_BUFFERS) so that thousands
 * of idle sessions stay cheap.
 */
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>

#include "server_internal.h"

/* TLS 1.2 suites: ephemeral key exchange only, AEAD first (TLS 1.3 keeps
 * OpenSSL's defaults). Security level 2 drops anything weaker still. */
#define TLS12_CIPHERS                                                                              \
    "ECDHE+AESGCM:ECDHE+CHACHA20:DHE+AESGCM:DHE+CHACHA20:ECDHE+AES:DHE+AES:!aNULL:!SHA1:"          \
    "@SECLEVEL=2"

/* The reason of the first OpenSSL error queued in this thread (the one
 * nearest the cause: "no start line", not "PEM lib"), or FALLBACK, copied
 * into BUF (cut to fit), which is returned. */
static const char *ossl_reason(char *buf, size_t size, const char *fallback)
{
    unsigned long e = ERR_peek_error();
    const char *r = e ? ERR_reason_error_string(e) : fallback;

    if (r != NULL)
        (void)snprintf(buf, size, "%s", r);
    else
        ERR_error_string_n(e, buf, size);
    return buf;
}

/* Whether OpenSSL refused a key because it is not the certificate's. */
static int key_mismatch(void)
{
    unsigned long e = ERR_peek_last_error();
    return ERR_GET_LIB(e) == ERR_LIB_X509 && ERR_GET_REASON(e) == X509_R_KEY_VALUES_MISMATCH;
}

/* A file we cannot read says why with errno, before OpenSSL says it worse. */
static int check_readable(const char *what, const char *path)
{
    if (path == NULL || path[0] == '\0')
        return semail__err(SEMAIL_EINVAL, "TLS listeners need a %s file", what);
    if (access(path, R_OK) < 0)
        return semail__errno(SEMAIL_EIO, errno, "TLS %s %s", what, path);
    return 0;
}

static int load_pair(SSL_CTX *ctx, const char *cert, const char *key)
{
    char why[256];
    int err;

    if ((err = check_readable("certificate", cert)) < 0 || (err = check_readable("key", key)) < 0)
        return err;
    if (SSL_CTX_use_certificate_chain_file(ctx, cert) != 1)
        return semail__err(SEMAIL_EINVAL, "TLS certificate %s: not a usable PEM chain (%s)", cert,
                           ossl_reason(why, sizeof(why), "unknown error"));
    if (SSL_CTX_use_PrivateKey_file(ctx, key, SSL_FILETYPE_PEM) != 1 && !key_mismatch())
        return semail__err(SEMAIL_EINVAL, "TLS key %s: not a usable PEM private key (%s)", key,
                           ossl_reason(why, sizeof(why), "unknown error"));
    if (key_mismatch() || SSL_CTX_check_private_key(ctx) != 1)
        return semail__err(SEMAIL_EINVAL, "TLS key %s does not match the certificate %s", key,
                           cert);
    return 0;
}

int server_tls_ctx_new(SSL_CTX **out, const char *cert, const char *key)
{
    char why[256];
    SSL_CTX *ctx;
    int err = 0;

    *out = NULL;
    ERR_clear_error();
    if ((ctx = SSL_CTX_new(TLS_server_method())) == NULL)
        return semail__err(SEMAIL_ENOMEM, "TLS: cannot create a context (%s)",
                           ossl_reason(why, sizeof(why), "out of memory"));
    SSL_CTX_set_security_level(ctx, 2);
    SSL_CTX_set_options(ctx, SSL_OP_NO_RENEGOTIATION | SSL_OP_NO_COMPRESSION |
                                 SSL_OP_CIPHER_SERVER_PREFERENCE | SSL_OP_IGNORE_UNEXPECTED_EOF);
    SSL_CTX_set_mode(ctx, SSL_MODE_RELEASE_BUFFERS | SSL_MODE_ENABLE_PARTIAL_WRITE |
                              SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
    SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF);
    if (SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION) != 1 ||
        SSL_CTX_set_cipher_list(ctx, TLS12_CIPHERS) != 1 || SSL_CTX_set_dh_auto(ctx, 1) != 1) {
        err = semail__err(SEMAIL_ERROR, "TLS: cannot configure the context (%s)",
                          ossl_reason(why, sizeof(why), "unknown error"));
        goto done;
    }
    if ((err = load_pair(ctx, cert, key)) < 0)
        goto done;
    *out = ctx;
    ctx = NULL;
done:
    SSL_CTX_free(ctx);
    ERR_clear_error();
    return err;
}

void server_tls_ctx_free(SSL_CTX *ctx)
{
    SSL_CTX_free(ctx);
}

int server_tls_start(server_conn *c, SSL_CTX *ctx)
{
    ERR_clear_error();
    if ((c->ssl = SSL_new(ctx)) == NULL || SSL_set_fd(c->ssl, c->fd) != 1) {
        SSL_free(c->ssl);
        c->ssl = NULL;
        ERR_clear_error();
        return semail__err(SEMAIL_ENOMEM, "TLS: cannot create a connection");
    }
    SSL_set_accept_state(c->ssl);
    return 0;
}

/* Map a failed SSL call to what it waits for; a fatal error marks the
 * connection broken (no close_notify is sent then: OpenSSL forbids it). */
static int io_result(server_conn *c, int r)
{
    switch (SSL_get_error(c->ssl, r)) {
    case SSL_ERROR_WANT_READ:
        return SERVER_IO_WANT_READ;
    case SSL_ERROR_WANT_WRITE:
        return SERVER_IO_WANT_WRITE;
    case SSL_ERROR_ZERO_RETURN:
        return SERVER_IO_EOF;
    default:
        c->tls_broken = 1;
        return SERVER_IO_ERROR;
    }
}

int server_tls_handshake(server_conn *c, char *why, size_t size)
{
    int r;

    ERR_clear_error();
    if ((r = SSL_do_handshake(c->ssl)) == 1)
        return 0;
    r = io_result(c, r);
    if (r == SERVER_IO_ERROR || r == SERVER_IO_EOF) {
        (void)ossl_reason(why, size, "connection closed or reset");
        c->tls_broken = 1;
        ERR_clear_error();
        return SERVER_IO_ERROR;
    }
    return r;
}

ssize_t server_tls_read(server_conn *c, void *buf, size_t n)
{
    int r;

    ERR_clear_error();
    r = SSL_read(c->ssl, buf, n > INT_MAX ? INT_MAX : (int)n);
    if (r > 0)
        return r;
    r = io_result(c, r);
    ERR_clear_error();
    return r;
}

ssize_t server_tls_write(server_conn *c, const void *p, size_t n)
{
    int r;

    ERR_clear_error();
    r = SSL_write(c->ssl, p, n > INT_MAX ? INT_MAX : (int)n);
    if (r > 0)
        return r;
    r = io_result(c, r);
    ERR_clear_error();
    /* A peer's close_notify while we write: nothing more can be sent. */
    return r == SERVER_IO_EOF ? SERVER_IO_ERROR : r;
}

int server_tls_pending(const server_conn *c)
{
    /* Decrypted bytes only. SSL_has_pending() also counts a partial record,
     * which only the socket can complete: treating it as readable would spin
     * (and never time out) on a client that stalls mid-record. */
    return c->ssl != NULL && SSL_pending(c->ssl) > 0;
}

void server_tls_end(server_conn *c, int notify)
{
    if (c->ssl == NULL)
        return;
    /* One try, without waiting: the close_notify is a courtesy. */
    if (notify && !c->tls_broken && SSL_is_init_finished(c->ssl))
        (void)SSL_shutdown(c->ssl);
    ERR_clear_error();
    SSL_free(c->ssl);
    c->ssl = NULL;
}
