/*
 * tsig_key.c - reading the TSIG key files that `tsig-keygen` writes:
 *
 *     key "semail-update" {
 *         algorithm hmac-sha256;
 *         secret "base64";
 *     };
 *
 * Contract: the text is untrusted (a file an administrator may have edited
 * by hand): the tokenizer is bounded by LEN and never needs a NUL, every
 * token has a maximum length, and any deviation from the grammar above
 * (exactly one key, each statement once) is SEMAIL_EINVAL with the line.
 * No OpenSSL here, so that the parser can be fuzzed on its own. The secret
 * is wiped when the key is freed.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "tsig_internal.h"

#define TOKEN_MAX 1024 /* a base64 secret of 256 bytes is 344 characters */

static const struct {
    const char *name;
    size_t mac_len;
} algorithms[] = {
    {"hmac-sha1", 20},   {"hmac-sha224", 28}, {"hmac-sha256", 32},
    {"hmac-sha384", 48}, {"hmac-sha512", 64},
};

typedef enum tok_kind { TOK_END, TOK_WORD, TOK_STRING, TOK_PUNCT } tok_kind;

typedef struct lexer {
    const char *p, *end;
    unsigned int line;
    tok_kind kind;
    char text[TOKEN_MAX + 1];
} lexer;

size_t semail__tsig_alg_mac_len(const char *name)
{
    size_t i;
    for (i = 0; i < SEMAIL_ARRAY_LEN(algorithms); i++)
        if (strcmp(algorithms[i].name, name) == 0)
            return algorithms[i].mac_len;
    return 0;
}

static const char *alg_static_name(const char *name)
{
    size_t i;
    for (i = 0; i < SEMAIL_ARRAY_LEN(algorithms); i++)
        if (strcmp(algorithms[i].name, name) == 0)
            return algorithms[i].name;
    return NULL;
}

static int syntax(const lexer *lx, const char *what)
{
    return semail__err(SEMAIL_EINVAL, "line %u: %s", lx->line, what);
}

/* Skip blanks and the three comment styles of named.conf. */
static int skip_space(lexer *lx)
{
    while (lx->p < lx->end) {
        char c = *lx->p;
        if (c == '\n') {
            lx->line++;
            lx->p++;
        } else if (c == ' ' || c == '\t' || c == '\r') {
            lx->p++;
        } else if (c == '#' || (c == '/' && lx->end - lx->p > 1 && lx->p[1] == '/')) {
            while (lx->p < lx->end && *lx->p != '\n')
                lx->p++;
        } else if (c == '/' && lx->end - lx->p > 1 && lx->p[1] == '*') {
            lx->p += 2;
            while (lx->p < lx->end && !(*lx->p == '*' && lx->end - lx->p > 1 && lx->p[1] == '/')) {
                if (*lx->p == '\n')
                    lx->line++;
                lx->p++;
            }
            if (lx->p >= lx->end)
                return syntax(lx, "unterminated comment");
            lx->p += 2;
        } else {
            break;
        }
    }
    return 0;
}

static bool word_char(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' ||
           c == '_' || c == '.' || c == '+' || c == '/' || c == '=';
}

static int lex_string(lexer *lx)
{
    size_t n = 0;
    lx->p++; /* the opening quote */
    for (;;) {
        char c;
        if (lx->p >= lx->end)
            return syntax(lx, "unterminated string");
        c = *lx->p++;
        if (c == '"')
            break;
        if (c == '\\') {
            if (lx->p >= lx->end)
                return syntax(lx, "unterminated string");
            c = *lx->p++;
        }
        if (c == '\n' || c == '\0')
            return syntax(lx, "line break or NUL in a string");
        if (n >= TOKEN_MAX)
            return syntax(lx, "string too long");
        lx->text[n++] = c;
    }
    lx->text[n] = '\0';
    lx->kind = TOK_STRING;
    return 0;
}

/* Read the next token into LX. */
static int lex_next(lexer *lx)
{
    size_t n = 0;
    int err;

    if ((err = skip_space(lx)) < 0)
        return err;
    lx->text[0] = '\0';
    if (lx->p >= lx->end) {
        lx->kind = TOK_END;
        return 0;
    }
    if (*lx->p == '"')
        return lex_string(lx);
    if (*lx->p == '{' || *lx->p == '}' || *lx->p == ';') {
        lx->text[0] = *lx->p++;
        lx->text[1] = '\0';
        lx->kind = TOK_PUNCT;
        return 0;
    }
    while (lx->p < lx->end && word_char(*lx->p)) {
        if (n >= TOKEN_MAX)
            return syntax(lx, "word too long");
        lx->text[n++] = *lx->p++;
    }
    if (n == 0)
        return syntax(lx, "unexpected character");
    lx->text[n] = '\0';
    lx->kind = TOK_WORD;
    return 0;
}

static int expect_punct(lexer *lx, char c)
{
    int err;
    char what[32];
    if ((err = lex_next(lx)) < 0)
        return err;
    if (lx->kind != TOK_PUNCT || lx->text[0] != c) {
        (void)semail__fmt(what, sizeof(what), "expected '%c'", c);
        return syntax(lx, what);
    }
    return 0;
}

/* Strict base64 (RFC 4648 section 4): padded, canonical, no blanks, not empty. */
static int b64_decode(uint8_t *out, size_t cap, size_t *outlen, const char *in)
{
    size_t len = strlen(in);
    long n;

    if (len == 0 || (n = semail__base64_decode(out, cap, in, len)) < 0)
        return -1;
    *outlen = (size_t)n;
    return 0;
}

static int set_name(semail_tsig_key *k, const lexer *lx)
{
    size_t i;
    if (semail__dns_name_from_text(&k->name, lx->text) < 0)
        return syntax(lx, "invalid key name");
    for (i = 0; i < k->name.len; i++)
        k->name.wire[i] = (uint8_t)semail__tolower(k->name.wire[i]);
    if (semail__dns_name_to_text(k->name_text, sizeof(k->name_text), &k->name) < 0)
        return syntax(lx, "invalid key name");
    return 0;
}

static int set_algorithm(semail_tsig_key *k, const lexer *lx)
{
    char lower[32];
    size_t i, n = strlen(lx->text);

    if (k->algorithm != NULL)
        return syntax(lx, "algorithm given twice");
    if (n >= sizeof(lower))
        return syntax(lx, "unsupported algorithm");
    for (i = 0; i <= n; i++)
        lower[i] = (char)semail__tolower((unsigned char)lx->text[i]);
    if ((k->algorithm = alg_static_name(lower)) == NULL)
        return semail__err(SEMAIL_EINVAL,
                           "line %u: unsupported algorithm '%.32s' (use hmac-sha256)", lx->line,
                           lx->text);
    k->mac_len = semail__tsig_alg_mac_len(lower);
    return semail__dns_name_from_text(&k->alg_name, k->algorithm);
}

static int set_secret(semail_tsig_key *k, const lexer *lx)
{
    if (k->secret_len != 0)
        return syntax(lx, "secret given twice");
    if (b64_decode(k->secret, sizeof(k->secret), &k->secret_len, lx->text) < 0 ||
        k->secret_len == 0) {
        k->secret_len = 0;
        return syntax(lx, "secret is not valid base64 (or longer than 256 bytes)");
    }
    return 0;
}

/* The statements between the braces of the key block. */
static int parse_body(semail_tsig_key *k, lexer *lx)
{
    int err;
    for (;;) {
        char keyword[16];
        if ((err = lex_next(lx)) < 0)
            return err;
        if (lx->kind == TOK_PUNCT && lx->text[0] == '}')
            break;
        if (lx->kind != TOK_WORD || semail__strlcpy(keyword, lx->text, sizeof(keyword)) < 0)
            return syntax(lx, "expected 'algorithm' or 'secret'");
        if ((err = lex_next(lx)) < 0)
            return err;
        if (strcmp(keyword, "algorithm") == 0 && lx->kind == TOK_WORD)
            err = set_algorithm(k, lx);
        else if (strcmp(keyword, "secret") == 0 && lx->kind == TOK_STRING)
            err = set_secret(k, lx);
        else
            err = syntax(lx, "expected 'algorithm NAME;' or 'secret \"BASE64\";'");
        if (err < 0 || (err = expect_punct(lx, ';')) < 0)
            return err;
    }
    if (k->algorithm == NULL)
        return syntax(lx, "the key has no algorithm");
    if (k->secret_len == 0)
        return syntax(lx, "the key has no secret");
    return expect_punct(lx, ';');
}

static int parse_key(semail_tsig_key *k, lexer *lx)
{
    int err;

    if ((err = lex_next(lx)) < 0)
        return err;
    if (lx->kind != TOK_WORD || strcmp(lx->text, "key") != 0)
        return syntax(lx, "expected 'key'");
    if ((err = lex_next(lx)) < 0)
        return err;
    if (lx->kind != TOK_WORD && lx->kind != TOK_STRING)
        return syntax(lx, "expected the key's name");
    if ((err = set_name(k, lx)) < 0 || (err = expect_punct(lx, '{')) < 0 ||
        (err = parse_body(k, lx)) < 0)
        return err;
    if ((err = lex_next(lx)) < 0)
        return err;
    if (lx->kind != TOK_END)
        return syntax(lx, "more than one key, or text after the key");
    return 0;
}

int semail_tsig_key_parse(semail_tsig_key **out, const char *text, size_t len)
{
    semail_tsig_key *k;
    lexer *lx;
    int err;

    if (out == NULL || (text == NULL && len > 0))
        return semail__err(SEMAIL_EINVAL, "NULL argument");
    *out = NULL;
    if (len > SEMAIL_TSIG_KEY_FILE_MAX)
        return semail__err(SEMAIL_ETOOBIG, "key file larger than %d bytes",
                           SEMAIL_TSIG_KEY_FILE_MAX);
    k = calloc(1, sizeof(*k));
    lx = calloc(1, sizeof(*lx));
    if (k == NULL || lx == NULL) {
        err = semail__err(SEMAIL_ENOMEM, "out of memory");
        goto done;
    }
    lx->p = text;
    lx->end = text + len;
    lx->line = 1;
    if ((err = parse_key(k, lx)) < 0)
        goto done;
    *out = k;
    k = NULL;
done:
    if (lx != NULL)
        explicit_bzero(lx, sizeof(*lx)); /* the secret passed through the token buffer */
    free(lx);
    semail_tsig_key_free(k);
    return err;
}

/* Read all of PATH (at most SEMAIL_TSIG_KEY_FILE_MAX bytes) into *BUF. */
static int read_small_file(const char *path, char **buf, size_t *len)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY);
    size_t n = 0;
    char *b;

    if (fd < 0)
        return semail__errno(errno == ENOENT ? SEMAIL_ENOTFOUND : SEMAIL_EIO, errno, "open %s",
                             path);
    if ((b = malloc(SEMAIL_TSIG_KEY_FILE_MAX + 1)) == NULL) {
        close(fd);
        return semail__err(SEMAIL_ENOMEM, "out of memory");
    }
    for (;;) {
        ssize_t k = read(fd, b + n, SEMAIL_TSIG_KEY_FILE_MAX + 1 - n);
        if (k < 0 && errno == EINTR)
            continue;
        if (k < 0) {
            int e = errno;
            close(fd);
            free(b);
            return semail__errno(SEMAIL_EIO, e, "read %s", path);
        }
        if (k == 0 || (n += (size_t)k) > SEMAIL_TSIG_KEY_FILE_MAX)
            break;
    }
    close(fd);
    if (n > SEMAIL_TSIG_KEY_FILE_MAX) {
        free(b);
        return semail__err(SEMAIL_ETOOBIG, "%s: larger than %d bytes", path,
                           SEMAIL_TSIG_KEY_FILE_MAX);
    }
    *buf = b;
    *len = n;
    return 0;
}

int semail_tsig_key_load(semail_tsig_key **out, const char *path)
{
    char *buf = NULL, why[256];
    size_t len = 0;
    int err;

    if (out == NULL || path == NULL)
        return semail__err(SEMAIL_EINVAL, "NULL argument");
    *out = NULL;
    if ((err = read_small_file(path, &buf, &len)) < 0)
        return err;
    err = semail_tsig_key_parse(out, buf, len);
    if (buf != NULL)
        explicit_bzero(buf, len);
    free(buf);
    if (err < 0) {
        (void)semail__strlcpy(why, semail_error_last(), sizeof(why));
        return semail__err(err, "%s: %s", path, why);
    }
    return 0;
}

void semail_tsig_key_free(semail_tsig_key *key)
{
    if (key == NULL)
        return;
    explicit_bzero(key, sizeof(*key));
    free(key);
}

const char *semail_tsig_key_name(const semail_tsig_key *key)
{
    return key != NULL ? key->name_text : "";
}

const char *semail_tsig_key_algorithm(const semail_tsig_key *key)
{
    return key != NULL && key->algorithm != NULL ? key->algorithm : "";
}
