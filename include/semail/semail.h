/**
 * @file semail.h
 * @brief libsemail: everything in one include.
 *
 * @mainpage libsemail
 *
 * libsemail is the mail platform's library: the SMTP session state machine
 * (smtp.h), the server runtime (server.h), mbox delivery (mbox.h), the user
 * registry (registry.h), provisioning of a person's box (provision.h) and
 * the configuration (config.h). Every function
 * follows one error convention (errors.h). The programs `semail-inbound`
 * and `semail-admin` are thin layers over it.
 */
#ifndef SEMAIL_SEMAIL_H
#define SEMAIL_SEMAIL_H

#include "semail/common.h"
#include "semail/errors.h"
#include "semail/version.h"
#include "semail/config.h"
#include "semail/date.h"
#include "semail/smtp.h"
#include "semail/mbox.h"
#include "semail/registry.h"
#include "semail/mx.h"
#include "semail/dns.h"
#include "semail/server.h"
#include "semail/queue.h"
#include "semail/dsn.h"
#include "semail/client.h"
#include "semail/net.h"
#include "semail/deliver.h"
#include "semail/relay.h"
#include "semail/ldap.h"
#include "semail/storage.h"
#include "semail/container.h"
#include "semail/provision.h"

#endif
