/* The kiln command: shared flag parsing and the subcommand entry points (one file each). */
#ifndef KILN_CLI_H
#define KILN_CLI_H

#include "kiln/core.h"

/* Exit codes shared by every subcommand. */
enum { EXIT_OK = 0, EXIT_CHECK_FAILED = 1, EXIT_USAGE = 2 };

typedef enum cli_kind { CLI_BOOL, CLI_STRING, CLI_INT, CLI_DOUBLE, CLI_LIST } cli_kind;

typedef struct cli_list {
  const char **items;
  int count;
} cli_list;

typedef struct cli_flag {
  const char *name; /* kebab-case; --snake_case is accepted too */
  cli_kind kind;
  void *dest;       /* int*, const char**, long*, double*, cli_list* */
  const char *arg;  /* placeholder shown in help, e.g. "N" */
  const char *help;
} cli_flag;

typedef struct cli_spec {
  const char *command; /* "kiln bench" */
  const char *usage;   /* "MODEL [flags]" */
  const char *summary; /* one paragraph */
  const cli_flag *flags;
  int min_args, max_args; /* positional arguments; max < 0 = unbounded */
} cli_spec;

/* Parses argv (argv[0] is the subcommand). Fills flag destinations and the positional list.
 * Returns -1 to go on, or an exit code (0 after --help, 2 after a usage error, with the message
 * on stderr). */
int cli_parse(const cli_spec *spec, int argc, char **argv, cli_list *positional);
void cli_list_free(cli_list *l);
/* snprintf for paths: returns 0, or -1 (buf holds "") when the result does not fit. */
int cli_path(char *buf, size_t size, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
/* Prints "kiln: <message>" to stderr, frees the status and returns the exit code it maps to. */
int cli_fail(kiln_status s);

int cmd_info(int argc, char **argv);
int cmd_run(int argc, char **argv);
int cmd_bench(int argc, char **argv);
int cmd_conformance(int argc, char **argv);
int cmd_serve(int argc, char **argv);

#endif
