/*
 * mm: command dispatch only. Global options before the command word
 * (--json, --server, --help, --version), then the command's own parser.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <curl/curl.h>
#include "mm/log.h"
#include "agent.h"

static const agent_cmd_t agent_cmds[] = {
    {"init", agent_cmd_init, "email name server-ca force", 0, 0,
     "init --email EMAIL [--name NAME] [--server URL] [--server-ca FILE] [--force]",
     "Makes this machine's identity: an EC P-256 key and a self-signed certificate carrying EMAIL,\n"
     "in $XDG_CONFIG_HOME/matchmaker (key and files mode 0600). --server-ca pins the CA that signed the\n"
     "server's certificate (else the system's store is used); --server remembers the server's URL.\n"
     "An existing identity is kept unless --force is given (the old key, and its peer_id, are then lost).\n\n"
     "Examples:\n"
     "  mm init --email alice@example.com --name Alice\n"
     "  mm init --email alice@example.com --server https://mm.example.com:8443 --server-ca ca.pem"},
    {"register", agent_cmd_register, "", 0, 0, "register",
     "Binds your email to your key at the server (first come, first bound). Safe to repeat.\n\n"
     "Examples:\n"
     "  mm register\n"
     "  mm --json register"},
    {"up", agent_cmd_up, "share port allow public bootstrap advertise stun stun-alt", 0, 0,
     "up --share DIR [--port N] [--allow EMAIL]... [--public] [--bootstrap] [--advertise ADDR]... [--stun HOST[:PORT]]",
     "Runs in the foreground until SIGINT or SIGTERM: serves DIR read-only over HTTPS (your certificate;\n"
     "callers must present theirs) to the emails given with --allow, or to anyone with --public, tells\n"
     "the server where this machine can be reached (every unicast address of its interfaces, or the\n"
     "--advertise ADDR[:PORT] given instead), keeps that alive with heartbeats, retries with backoff while\n"
     "the server is unreachable, and ends the broadcast when it stops. --port: the peer server's port\n"
     "(default 7470, 0 for any free port). --bootstrap volunteers as a bootstrap node.\n"
     "It also answers hole punches (mm punch) from the same callers; --stun and --stun-alt say where\n"
     "mm-signal's STUN listens when it is not on the server's host at ports 3478 and 3479.\n"
     "Callers are recognised through the server, so they must be online too (running mm up).\n\n"
     "Examples:\n"
     "  mm up --share ~/Public --allow bob@example.com --allow carol@example.com\n"
     "  mm up --share /srv/pub --public --port 7471\n"
     "  mm --json up --share ~/Public --allow bob@example.com"},
    {"peers", agent_cmd_peers, "", 0, 0, "peers",
     "Lists every peer that is online now (all pages of the server's list).\n\n"
     "Examples:\n"
     "  mm peers\n"
     "  mm --json peers"},
    {"lookup", agent_cmd_lookup, "", 1, 1, "lookup EMAIL",
     "Shows one online peer: its peer_id and the addresses it can be reached at.\n\n"
     "Examples:\n"
     "  mm lookup bob@example.com\n"
     "  mm lookup --json bob@example.com"},
    {"connect", agent_cmd_connect, "timeout sequential", 1, 1, "connect EMAIL [--timeout S] [--sequential]",
     "Finds a working address of EMAIL's peer: looks it up, tries its addresses (the last one that\n"
     "worked, then the same subnet, other private, public IPv6, public IPv4), starting a new attempt\n"
     "every 250 ms without waiting for the earlier ones (Happy Eyeballs, RFC 8305), and keeps the first\n"
     "whose TLS certificate belongs to the peer_id the server gave. Prints the address and the time;\n"
     "caches the winner in $XDG_CACHE_HOME/matchmaker. --timeout: give up after S seconds (default 10);\n"
     "--sequential: one address at a time, each for up to 2 s (for comparison).\n\n"
     "Examples:\n"
     "  mm connect bob@example.com\n"
     "  mm connect --json bob@example.com"},
    {"ls", agent_cmd_ls, "timeout", 1, 2, "ls EMAIL [PATH]",
     "Lists a folder that EMAIL shares with you (PATH relative to the shared folder; default its root).\n\n"
     "Examples:\n"
     "  mm ls bob@example.com\n"
     "  mm ls bob@example.com photos/2026"},
    {"get", agent_cmd_get, "output timeout", 2, 2, "get EMAIL PATH [-o FILE]",
     "Downloads a file that EMAIL shares with you, to FILE (default: its name, in the current folder;\n"
     "- for stdout). The file appears complete or not at all: it is written as FILE.part and renamed;\n"
     "an interrupted download resumes where it stopped (HTTP Range) when run again. A progress bar is\n"
     "shown on a terminal. Files are written with mode 0600.\n\n"
     "Examples:\n"
     "  mm get bob@example.com photos/cat.jpg\n"
     "  mm get bob@example.com big.iso -o /tmp/big.iso"},
    {"punch", agent_cmd_punch, "timeout stun stun-alt", 1, 1, "punch EMAIL [--timeout S] [--stun HOST[:PORT]] [--stun-alt PORT]",
     "Opens a direct UDP path to EMAIL's machine through both NATs (hole punching): learns this machine's\n"
     "public UDP address from mm-signal's STUN, offers it to the peer through mm-signal, and once the\n"
     "peer's mm up answers, both sides send authenticated probes to each other's addresses at the same\n"
     "moment. Prints the local and remote address of the first path that answered, and its round trip.\n"
     "Up to 3 more attempts when one fails; gives up within 30 s (or --timeout S), saying why (a NAT\n"
     "that maps per destination, \"symmetric\", cannot be punched). The peer must run mm up with you in\n"
     "its --allow list (or --public).\n"
     "--stun: where mm-signal's STUN listens (default: the server's host, port 3478;\n"
     "MM_STUN); --stun-alt: its second port (default PORT + 1; MM_STUN_ALT).\n\n"
     "Examples:\n"
     "  mm punch bob@example.com\n"
     "  mm punch --json bob@example.com"},
    {"stun", agent_cmd_stun, "stun stun-alt", 0, 0, "stun [--stun HOST[:PORT]] [--stun-alt PORT]",
     "Shows how this machine is seen from outside over UDP: the public address mm-signal's STUN saw,\n"
     "and whether the NAT keeps one public port for every destination (endpoint-independent: hole\n"
     "punching can work) or makes a new one per destination (address-dependent, \"symmetric\": it cannot).\n\n"
     "Examples:\n"
     "  mm stun\n"
     "  mm stun --json --stun stun.example.com:3478"},
    {"down", agent_cmd_down, "", 0, 0, "down",
     "Stops broadcasting: stops a running mm up of this identity (which tells the server), then tells\n"
     "the server again in case mm up could not.\n\n"
     "Examples:\n"
     "  mm down"},
};

static const agent_cmd_t *agent_find_cmd(const char *name)
{
    size_t i;

    for (i = 0; i != MM_ARRAY_SIZE(agent_cmds); ++i)
        if (strcmp(agent_cmds[i].name, name) == 0)
            return &agent_cmds[i];
    return NULL;
}

int main(int argc, char **argv)
{
    const agent_cmd_t *cmd;
    const char *server = NULL, *level = getenv("MM_LOG_LEVEL");
    agent_args_t args;
    int i, json = 0, rc;

    mm_log_init("mm", level != NULL && level[0] != '\0' ? level : "warn");
    for (i = 1; i < argc && argv[i][0] == '-'; ++i) {
        if (strcmp(argv[i], "--json") == 0) {
            json = 1;
            agent_out_init(1);
        } else if (strcmp(argv[i], "--server") == 0 && i + 1 < argc) {
            server = argv[++i];
        } else if (strncmp(argv[i], "--server=", 9) == 0) {
            server = argv[i] + 9;
        } else if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
            agent_cli_usage(stdout, agent_cmds, MM_ARRAY_SIZE(agent_cmds));
            return AGENT_EXIT_OK;
        } else if (strcmp(argv[i], "--version") == 0 || strcmp(argv[i], "-V") == 0) {
            printf("mm %s\n", MM_VERSION);
            return AGENT_EXIT_OK;
        } else {
            return agent_cli_usage_error(NULL, "unknown option %s", argv[i]);
        }
    }
    if (i == argc) {
        agent_cli_usage(stderr, agent_cmds, MM_ARRAY_SIZE(agent_cmds));
        return AGENT_EXIT_USAGE;
    }
    if (strcmp(argv[i], "help") == 0) {
        if (i + 1 < argc && (cmd = agent_find_cmd(argv[i + 1])) != NULL)
            agent_cli_cmd_help(stdout, cmd);
        else
            agent_cli_usage(stdout, agent_cmds, MM_ARRAY_SIZE(agent_cmds));
        return AGENT_EXIT_OK;
    }
    if ((cmd = agent_find_cmd(argv[i])) == NULL)
        return agent_cli_usage_error(NULL, "unknown command '%s'", argv[i]);
    if ((rc = agent_cli_parse(cmd, argc - i, argv + i, &args)) != 0)
        goto out;
    if (args.help) {
        agent_cli_cmd_help(stdout, cmd);
        goto out;
    }
    args.json |= json;
    if (args.server == NULL)
        args.server = server;
    curl_global_init(CURL_GLOBAL_DEFAULT);
    rc = cmd->fn(&args);
    curl_global_cleanup();
out:
    agent_cli_free(&args);
    return rc;
}
