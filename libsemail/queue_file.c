/*
 * queue_file.c - encode and parse queue files (format: docs/queue.md).
 *
 * Contract: a message file is "header, data, trailer"; a state file is a
 * list of lines closed by a checksum line. Both are text with one field per
 * line, values percent-encoded so that no value holds a space, a control
 * byte or a newline. Parsers are strict (fixed line order, exact sizes,
 * CRC-32 checked, nothing after the end): anything else is SEMAIL_EINVAL,
 * which the queue treats as "damaged", never as a state to act upon.
 */
#include <stdlib.h>
#include <string.h>

#include "queue_file.h"

#define ENC_MAX_FACTOR 3

uint32_t semail__crc32(uint32_t crc, const void *p, size_t n)
{
    /* The table is built on the stack: no global state, and it costs
     * 2k shifts, nothing next to the fsync that follows every checksum. */
    uint32_t table[256];
    const unsigned char *c = p;

    for (uint32_t i = 0; i < 256; i++) {
        uint32_t v = i;
        for (int k = 0; k < 8; k++)
            v = (v & 1) ? 0xEDB88320u ^ (v >> 1) : v >> 1;
        table[i] = v;
    }
    crc = ~crc;
    while (n--)
        crc = table[(crc ^ *c++) & 0xff] ^ (crc >> 8);
    return ~crc;
}

int semail__qf_valid_qid(const char *s)
{
    size_t n = 0;
    for (; s[n]; n++) {
        if (!((s[n] >= '0' && s[n] <= '9') || (s[n] >= 'A' && s[n] <= 'Z')))
            return 0;
        if (n >= SEMAIL_QUEUE_QID_SIZE - 1)
            return 0;
    }
    return n >= 16;
}

void semail__qf_sanitize(char *dst, size_t size, const char *s)
{
    size_t i = 0;
    if (size == 0)
        return;
    for (; s != NULL && s[i] && i + 1 < size; i++) {
        unsigned char c = (unsigned char)s[i];
        dst[i] = (c < 0x20 || c == 0x7f) ? ' ' : (char)c;
    }
    dst[i] = '\0';
}

/* ---- values --------------------------------------------------------------- */

static int enc_value(semail_buf *out, const char *s)
{
    static const char hex[] = "0123456789ABCDEF";
    int err;

    if (s[0] == '\0')
        return semail__buf_addstr(out, "-");
    if (strcmp(s, "-") == 0)
        return semail__buf_addstr(out, "%2D");
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        if (c <= 0x20 || c >= 0x7f || c == '%') {
            char e[3] = {'%', hex[c >> 4], hex[c & 15]};
            err = semail__buf_add(out, e, 3);
        } else {
            err = semail__buf_add(out, s, 1);
        }
        if (err < 0)
            return err;
    }
    return 0;
}

static int hexval(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

/* Decode V (N bytes) into DST of SIZE bytes; control bytes and NUL refused. */
static int dec_value(char *dst, size_t size, const char *v, size_t n)
{
    size_t o = 0;

    if (n == 1 && v[0] == '-') {
        dst[0] = '\0';
        return 0;
    }
    if (n == 0)
        return SEMAIL_EINVAL;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)v[i];
        if (c <= 0x20 || c >= 0x7f)
            return SEMAIL_EINVAL;
        if (c == '%') {
            int hi, lo;
            if (n - i < 3 || (hi = hexval(v[i + 1])) < 0 || (lo = hexval(v[i + 2])) < 0)
                return SEMAIL_EINVAL;
            c = (unsigned char)(hi << 4 | lo);
            if (c < 0x20 || c == 0x7f)
                return SEMAIL_EINVAL;
            /* Only what enc_value() escapes may be escaped: one spelling per value. */
            if (!(c == 0x20 || c > 0x7f || c == '%' || (c == '-' && n == 3)))
                return SEMAIL_EINVAL;
            i += 2;
        }
        if (o + 1 >= size)
            return SEMAIL_EINVAL;
        dst[o++] = (char)c;
    }
    dst[o] = '\0';
    return 0;
}

static char *dec_value_dup(const char *v, size_t n)
{
    char *s = malloc(n + 1);
    if (s == NULL)
        return NULL;
    if (dec_value(s, n + 1, v, n) < 0) {
        free(s);
        return NULL;
    }
    return s;
}

/* Decimal digits only (no sign, no space, no leading zero: one spelling per value), at most MAX. */
static int parse_u64(uint64_t *out, const char *v, size_t n, uint64_t max)
{
    uint64_t x = 0;
    if (n == 0 || n > 20 || (n > 1 && v[0] == '0'))
        return SEMAIL_EINVAL;
    for (size_t i = 0; i < n; i++) {
        unsigned d;
        if (v[i] < '0' || v[i] > '9')
            return SEMAIL_EINVAL;
        d = (unsigned)(v[i] - '0');
        if (x > (max - d) / 10)
            return SEMAIL_EINVAL;
        x = x * 10 + d;
    }
    *out = x;
    return 0;
}

static int parse_i64(int64_t *out, const char *v, size_t n)
{
    uint64_t x;
    if (parse_u64(&x, v, n, INT64_MAX) < 0)
        return SEMAIL_EINVAL;
    *out = (int64_t)x;
    return 0;
}

static int parse_hex32(uint32_t *out, const char *v, size_t n)
{
    uint32_t x = 0;
    if (n != 8)
        return SEMAIL_EINVAL;
    for (size_t i = 0; i < n; i++) {
        int d = (v[i] >= 'a' && v[i] <= 'f') ? v[i] - 'a' + 10 : hexval(v[i]);
        if (d < 0 || (v[i] >= 'A' && v[i] <= 'F'))
            return SEMAIL_EINVAL;
        x = x << 4 | (uint32_t)d;
    }
    *out = x;
    return 0;
}

/* ---- lines ---------------------------------------------------------------- */

typedef struct cursor {
    const char *buf;
    size_t len;
    size_t off;
} cursor;

/* The next line "KEY VALUE\n"; VALUE may not be empty. */
static int take(cursor *c, const char *key, const char **val, size_t *vlen)
{
    size_t klen = strlen(key), rest = c->len - c->off;
    const char *p = c->buf + c->off, *nl;

    if (rest < klen + 2 || memcmp(p, key, klen) != 0 || p[klen] != ' ')
        return SEMAIL_EINVAL;
    nl = memchr(p + klen + 1, '\n', rest - klen - 1);
    if (nl == NULL || nl == p + klen + 1)
        return SEMAIL_EINVAL;
    *val = p + klen + 1;
    *vlen = (size_t)(nl - *val);
    c->off = (size_t)(nl - c->buf) + 1;
    return 0;
}

static int take_u64(cursor *c, const char *key, uint64_t *out, uint64_t max)
{
    const char *v;
    size_t n;
    if (take(c, key, &v, &n) < 0)
        return SEMAIL_EINVAL;
    return parse_u64(out, v, n, max);
}

static int take_i64(cursor *c, const char *key, int64_t *out)
{
    const char *v;
    size_t n;
    if (take(c, key, &v, &n) < 0)
        return SEMAIL_EINVAL;
    return parse_i64(out, v, n);
}

static int take_magic(cursor *c, const char *magic)
{
    size_t n = strlen(magic);
    if (c->len - c->off < n || memcmp(c->buf + c->off, magic, n) != 0)
        return SEMAIL_EINVAL;
    c->off += n;
    return 0;
}

static int take_qid(cursor *c, char *qid)
{
    const char *v;
    size_t n;
    if (take(c, "qid", &v, &n) < 0 || n >= SEMAIL_QUEUE_QID_SIZE)
        return SEMAIL_EINVAL;
    memcpy(qid, v, n);
    qid[n] = '\0';
    /* strlen: a NUL inside would hide the bytes after it from the check. */
    return strlen(qid) == n && semail__qf_valid_qid(qid) ? 0 : SEMAIL_EINVAL;
}

/* A "KEY crc\n" line whose CRC is that of everything before it. */
static int take_sum(cursor *c, const char *key)
{
    size_t start = c->off;
    const char *v;
    size_t n;
    uint32_t want;

    if (take(c, key, &v, &n) < 0 || parse_hex32(&want, v, n) < 0)
        return SEMAIL_EINVAL;
    return semail__crc32(0, c->buf, start) == want ? 0 : SEMAIL_EINVAL;
}

/* ---- message files -------------------------------------------------------- */

int semail__qf_msg_encode_header(semail_buf *out, const char *qid, int64_t arrival_ms,
                                 const char *sender, const char *const *rcpts, size_t rcpt_count,
                                 uint64_t size)
{
    size_t start = out->len;
    int err;

    if ((err = semail__buf_printf(out, SEMAIL__QF_MSG_MAGIC "qid %s\narrival %lld\nsender ", qid,
                                  (long long)arrival_ms)) < 0 ||
        (err = enc_value(out, sender ? sender : "")) < 0 ||
        (err = semail__buf_printf(out, "\nrcpts %zu\n", rcpt_count)) < 0)
        return err;
    for (size_t i = 0; i < rcpt_count; i++) {
        if ((err = semail__buf_addstr(out, "rcpt ")) < 0 || (err = enc_value(out, rcpts[i])) < 0 ||
            (err = semail__buf_addstr(out, "\n")) < 0)
            return err;
    }
    if ((err = semail__buf_printf(out, "size %llu\n", (unsigned long long)size)) < 0)
        return err;
    return semail__buf_printf(out, "hsum %08x\n",
                              semail__crc32(0, out->data + start, out->len - start));
}

int semail__qf_msg_encode_trailer(semail_buf *out, const void *data, size_t len)
{
    return semail__buf_printf(out, "dsum %08x\n", semail__crc32(0, data, len));
}

void semail__qf_msg_clear(semail__qf_msg *m)
{
    if (m->rcpts) {
        for (size_t i = 0; i < m->rcpt_count; i++)
            free(m->rcpts[i]);
        free(m->rcpts);
    }
    free(m->sender);
    memset(m, 0, sizeof(*m));
}

static int parse_addr(char **out, cursor *c, const char *key, int allow_empty)
{
    const char *v;
    size_t n;
    if (take(c, key, &v, &n) < 0 || n > SEMAIL_QUEUE_ADDR_MAX * ENC_MAX_FACTOR)
        return SEMAIL_EINVAL;
    if ((*out = dec_value_dup(v, n)) == NULL)
        return SEMAIL_EINVAL;
    if ((!allow_empty && (*out)[0] == '\0') || strlen(*out) > SEMAIL_QUEUE_ADDR_MAX)
        return SEMAIL_EINVAL;
    return 0;
}

int semail__qf_msg_parse_header(semail__qf_msg *m, const char *buf, size_t len)
{
    cursor c = {buf, len, 0};
    uint64_t count;

    memset(m, 0, sizeof(*m));
    if (take_magic(&c, SEMAIL__QF_MSG_MAGIC) < 0 || take_qid(&c, m->qid) < 0 ||
        take_i64(&c, "arrival", &m->arrival_ms) < 0 ||
        parse_addr(&m->sender, &c, "sender", 1) < 0 ||
        take_u64(&c, "rcpts", &count, SEMAIL_QUEUE_RCPT_MAX) < 0 || count == 0)
        goto bad;
    if ((m->rcpts = calloc((size_t)count, sizeof(*m->rcpts))) == NULL)
        goto bad;
    m->rcpt_count = (size_t)count;
    for (size_t i = 0; i < m->rcpt_count; i++) {
        if (parse_addr(&m->rcpts[i], &c, "rcpt", 0) < 0)
            goto bad;
    }
    if (take_u64(&c, "size", &m->size, UINT64_MAX) < 0 || take_sum(&c, "hsum") < 0)
        goto bad;
    m->header_len = c.off;
    return 0;
bad:
    semail__qf_msg_clear(m);
    return SEMAIL_EINVAL;
}

int semail__qf_msg_check_data(const semail__qf_msg *m, const char *buf, size_t file_len)
{
    cursor c;

    if (file_len < m->header_len || file_len - m->header_len < SEMAIL__QF_TRAILER_LEN ||
        file_len - m->header_len - SEMAIL__QF_TRAILER_LEN != m->size)
        return SEMAIL_EINVAL;
    c.buf = buf + m->header_len;
    c.len = (size_t)m->size + SEMAIL__QF_TRAILER_LEN;
    c.off = (size_t)m->size;
    if (take_sum(&c, "dsum") < 0 || c.off != c.len)
        return SEMAIL_EINVAL;
    return 0;
}

/* ---- state files ---------------------------------------------------------- */

/* Not a string: memchr() must not find a NUL as a fourth state. */
static const char state_chars[3] = {'P', 'D', 'F'};

int semail__qf_state_encode(semail_buf *out, const semail__qf_state *s)
{
    size_t start = out->len;
    int err;

    if ((err = semail__buf_printf(
             out, SEMAIL__QF_STATE_MAGIC "qid %s\nattempts %u\nnext %lld\nlast %lld\nrcpts %zu\n",
             s->qid, s->attempts, (long long)s->next_ms, (long long)s->last_ms, s->rcpt_count)) < 0)
        return err;
    for (size_t i = 0; i < s->rcpt_count; i++) {
        const semail_queue_rcpt *r = &s->rcpts[i];
        if ((unsigned)r->state > 2 || r->result.code < 0 || r->result.code > 999)
            return semail__err(SEMAIL_EINVAL, "bad recipient state");
        if ((err = semail__buf_printf(out, "r %c %d %d ", state_chars[r->state],
                                      r->notified ? 1 : 0, r->result.code)) < 0 ||
            (err = enc_value(out, r->result.enhanced)) < 0 ||
            (err = semail__buf_printf(out, " %lld ", (long long)r->result.time_ms)) < 0 ||
            (err = enc_value(out, r->result.remote_host)) < 0 ||
            (err = semail__buf_addstr(out, " ")) < 0 ||
            (err = enc_value(out, r->result.text)) < 0 || (err = semail__buf_addstr(out, "\n")) < 0)
            return err;
    }
    return semail__buf_printf(out, "sum %08x\n",
                              semail__crc32(0, out->data + start, out->len - start));
}

void semail__qf_state_clear(semail__qf_state *s)
{
    free(s->rcpts);
    memset(s, 0, sizeof(*s));
}

/* Split V (N bytes) at single spaces into exactly NF fields. */
static int split(const char **f, size_t *fl, size_t nf, const char *v, size_t n)
{
    size_t k = 0, start = 0;
    for (size_t i = 0; i <= n; i++) {
        if (i < n && v[i] != ' ')
            continue;
        if (k == nf || i == start)
            return SEMAIL_EINVAL;
        f[k] = v + start;
        fl[k++] = i - start;
        start = i + 1;
    }
    return k == nf ? 0 : SEMAIL_EINVAL;
}

static int parse_rcpt_line(semail_queue_rcpt *r, cursor *c)
{
    const char *v, *f[7], *st;
    size_t n, fl[7];
    uint64_t code;

    if (take(c, "r", &v, &n) < 0 || split(f, fl, 7, v, n) < 0)
        return SEMAIL_EINVAL;
    if (fl[0] != 1 || (st = memchr(state_chars, f[0][0], sizeof(state_chars))) == NULL)
        return SEMAIL_EINVAL;
    r->state = (semail_queue_rcpt_state)(st - state_chars);
    if (fl[1] != 1 || (f[1][0] != '0' && f[1][0] != '1'))
        return SEMAIL_EINVAL;
    r->notified = f[1][0] == '1';
    if (parse_u64(&code, f[2], fl[2], 999) < 0)
        return SEMAIL_EINVAL;
    r->result.code = (int)code;
    if (dec_value(r->result.enhanced, sizeof(r->result.enhanced), f[3], fl[3]) < 0 ||
        parse_i64(&r->result.time_ms, f[4], fl[4]) < 0 ||
        dec_value(r->result.remote_host, sizeof(r->result.remote_host), f[5], fl[5]) < 0 ||
        dec_value(r->result.text, sizeof(r->result.text), f[6], fl[6]) < 0)
        return SEMAIL_EINVAL;
    /* A recipient notified of a failure that is not a failure is nonsense. */
    return (r->notified && r->state != SEMAIL_QUEUE_FAILED) ? SEMAIL_EINVAL : 0;
}

int semail__qf_state_parse(semail__qf_state *s, const char *buf, size_t len)
{
    cursor c = {buf, len, 0};
    uint64_t attempts, count;

    memset(s, 0, sizeof(*s));
    if (take_magic(&c, SEMAIL__QF_STATE_MAGIC) < 0 || take_qid(&c, s->qid) < 0 ||
        take_u64(&c, "attempts", &attempts, UINT32_MAX) < 0 ||
        take_i64(&c, "next", &s->next_ms) < 0 || take_i64(&c, "last", &s->last_ms) < 0 ||
        take_u64(&c, "rcpts", &count, SEMAIL_QUEUE_RCPT_MAX) < 0 || count == 0)
        goto bad;
    s->attempts = (unsigned int)attempts;
    if ((s->rcpts = calloc((size_t)count, sizeof(*s->rcpts))) == NULL)
        goto bad;
    s->rcpt_count = (size_t)count;
    for (size_t i = 0; i < s->rcpt_count; i++) {
        if (parse_rcpt_line(&s->rcpts[i], &c) < 0)
            goto bad;
    }
    if (take_sum(&c, "sum") < 0 || c.off != c.len)
        goto bad;
    return 0;
bad:
    semail__qf_state_clear(s);
    return SEMAIL_EINVAL;
}
