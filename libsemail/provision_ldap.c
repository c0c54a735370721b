/*
 * provision_ldap.c - `semail-admin ldap add-person`: one inetOrgPerson
 * entry added to the platform's own directory, for the demo.
 *
 * Contract: the entry is `uid=LOGIN,BASE` (LOGIN checked, then escaped per
 * RFC 4514 anyway), written over one connection bound as `[ldap]
 * search_dn`; nothing is sent before every value passed its check; the
 * password never appears in a message.
 */
#include <ldap.h>
#include <string.h>

#include "provision_ctx.h"

static int code_of(int rc)
{
    switch (rc) {
    case LDAP_ALREADY_EXISTS:
        return SEMAIL_EEXISTS;
    case LDAP_SERVER_DOWN:
    case LDAP_CONNECT_ERROR:
    case LDAP_TIMEOUT:
    case LDAP_BUSY:
    case LDAP_UNAVAILABLE:
        return SEMAIL_ETEMP;
    case LDAP_INVALID_CREDENTIALS:
    case LDAP_INSUFFICIENT_ACCESS:
    case LDAP_STRONG_AUTH_REQUIRED:
    case LDAP_UNWILLING_TO_PERFORM:
        return SEMAIL_EPERM;
    case LDAP_NO_SUCH_OBJECT:
        return SEMAIL_ENOTFOUND;
    default:
        return SEMAIL_ERROR;
    }
}

static int text_ok(const char *s)
{
    for (; *s; s++)
        if ((unsigned char)*s < 0x20 || *s == 0x7f)
            return 0;
    return 1;
}

static int connect_bound(LDAP **out, const semail_ldap_options *o)
{
    unsigned int ms = o->timeout_ms ? o->timeout_ms : SEMAIL_LDAP_DEFAULT_TIMEOUT_MS;
    struct timeval tv = {(time_t)(ms / 1000), (suseconds_t)(ms % 1000) * 1000};
    int v3 = LDAP_VERSION3, rc, demand = LDAP_OPT_X_TLS_DEMAND, is_server = 0;
    struct berval cred;
    LDAP *ld = NULL;

    if ((rc = ldap_initialize(&ld, o->uri)) != LDAP_SUCCESS)
        return semail__err(SEMAIL_ECONFIG, "[ldap] uri '%s': %s", o->uri, ldap_err2string(rc));
    *out = ld;
    ldap_set_option(ld, LDAP_OPT_PROTOCOL_VERSION, &v3);
    ldap_set_option(ld, LDAP_OPT_NETWORK_TIMEOUT, &tv);
    ldap_set_option(ld, LDAP_OPT_TIMEOUT, &tv);
    if (strncmp(o->uri, "ldaps://", 8) == 0) {
        ldap_set_option(ld, LDAP_OPT_X_TLS_REQUIRE_CERT, &demand);
        if (o->ca_file && *o->ca_file)
            ldap_set_option(ld, LDAP_OPT_X_TLS_CACERTFILE, o->ca_file);
        ldap_set_option(ld, LDAP_OPT_X_TLS_NEWCTX, &is_server);
    }
    cred.bv_val = (char *)(o->search_password ? o->search_password : "");
    cred.bv_len = strlen(cred.bv_val);
    rc = ldap_sasl_bind_s(ld, o->search_dn, LDAP_SASL_SIMPLE, &cred, NULL, NULL, NULL);
    if (rc != LDAP_SUCCESS)
        return semail__err(code_of(rc), "LDAP server %s: bind as %s: %s", o->uri, o->search_dn,
                           ldap_err2string(rc));
    return 0;
}

static int add_entry(LDAP *ld, const semail_ldap_options *o, const char *dn, const char *login,
                     const char *password, const char *name)
{
    char *oc[] = {"inetOrgPerson", NULL}, *uid[] = {(char *)login, NULL};
    char *cn[] = {(char *)name, NULL}, *pw[] = {(char *)password, NULL};
    LDAPMod m_oc = {LDAP_MOD_ADD, "objectClass", {oc}}, m_uid = {LDAP_MOD_ADD, "uid", {uid}};
    LDAPMod m_cn = {LDAP_MOD_ADD, "cn", {cn}}, m_sn = {LDAP_MOD_ADD, "sn", {cn}};
    LDAPMod m_pw = {LDAP_MOD_ADD, "userPassword", {pw}};
    LDAPMod *mods[] = {&m_oc, &m_uid, &m_cn, &m_sn, &m_pw, NULL};
    int rc = ldap_add_ext_s(ld, dn, mods, NULL, NULL);

    if (rc == LDAP_ALREADY_EXISTS)
        return semail__err(SEMAIL_EEXISTS, "the directory already has %s", dn);
    if (rc != LDAP_SUCCESS)
        return semail__err(code_of(rc), "LDAP server %s: add %s: %s", o->uri, dn,
                           ldap_err2string(rc));
    return 0;
}

int semail_provision_ldap_add_person(semail_provision *p, const char *login, const char *password,
                                     const char *name)
{
    char esc[SEMAIL_LDAP_ESCAPED_MAX(32)], dn[SEMAIL_LDAP_DN_MAX];
    LDAP *ld = NULL;
    int err;

    if (p == NULL || login == NULL || password == NULL)
        return semail__err(SEMAIL_EINVAL, "ldap add-person: NULL argument");
    if (!p->ldap_on)
        return semail__err(SEMAIL_ENOTFOUND, "no [ldap] section: there is no directory to add to");
    if (semail_validate_name(login) < 0)
        return semail__prov_err(SEMAIL_EINVAL, "login %s", semail_error_last());
    if (*password == '\0' || !text_ok(password))
        return semail__err(SEMAIL_EINVAL, "the password is empty or has control characters");
    if (name && (*name == '\0' || !text_ok(name)))
        return semail__err(SEMAIL_EINVAL, "the name is empty or has control characters");
    if (p->ldap.search_dn == NULL || *p->ldap.search_dn == '\0')
        return semail__err(SEMAIL_ECONFIG, "[ldap] search_dn (an account that may write) is "
                                           "needed to add a person");
    if (semail_ldap_escape_dn(esc, sizeof(esc), login) < 0 ||
        semail__fmt(dn, sizeof(dn), "uid=%s,%s", esc, p->ldap.base) < 0)
        return semail__err(SEMAIL_EINVAL, "the DN of '%s' is too long", login);
    if ((err = connect_bound(&ld, &p->ldap)) == 0 &&
        (err = add_entry(ld, &p->ldap, dn, login, password, name ? name : login)) == 0)
        semail__prov_log(p, "ldap: added %s", dn);
    if (ld != NULL)
        ldap_unbind_ext_s(ld, NULL, NULL);
    return err;
}
