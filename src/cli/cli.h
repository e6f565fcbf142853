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

/* One command of a group (`kiln data cat`, `kiln registry push`). */
typedef struct cli_command {
  const char *name;
  int (*fn)(int argc, char **argv); /* argv[0] is the command's name */
  const char *summary;
} cli_command;

/* `kiln GROUP COMMAND ...`: runs the command argv[1] names, or prints the group's usage (the
 * commands, then `epilogue`) for --help (exit 0) or a missing or unknown command (exit 2). */
int cli_dispatch(const char *group, const cli_command *commands, int n, const char *epilogue, int argc, char **argv);

/* Parses argv (argv[0] is the subcommand). Fills flag destinations and the positional list.
 * Returns -1 to go on, or an exit code (0 after --help, 2 after a usage error, with the message
 * on stderr). */
int cli_parse(const cli_spec *spec, int argc, char **argv, cli_list *positional);
void cli_list_free(cli_list *l);
/* snprintf for paths: returns 0, or -1 (buf holds "") when the result does not fit. */
int cli_path(char *buf, size_t size, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
/* Prints "kiln: <message>" to stderr, frees the status and returns the exit code it maps to. */
int cli_fail(kiln_status s);

/* ---------------------------------------------------------------- --device (device.c) */

/* The highest N --device cuda:N takes; a bound on outside input, far above any node's GPU count. */
#define CLI_DEVICE_MAX_INDEX 1023

/* Where a command runs: the CPU, or CUDA device `index` (NVML's numbering). */
typedef struct cli_device {
  int cuda;
  int index;
} cli_device;

/* The --device flag as each command declares it (snake_case or kebab-case, the word is the same). */
#define CLI_DEVICE_FLAG(dest) \
  {"device", CLI_STRING, &(dest), "DEV", "cpu (default) or cuda[:N]; this kiln has no CUDA backend yet: cuda exits 2"}

/* Parses --device's value: "cpu" (NULL too: the default), "cuda" (device 0) or "cuda:N" with N
 * in 0..CLI_DEVICE_MAX_INDEX, digits only. An error names the flag, the value and what it takes. */
kiln_status cli_device_parse(const char *value, cli_device *out);
/* Parses `value` and, for a CUDA device, asks NVML whether it is there. NULL for the CPU; an error
 * otherwise, since kiln has no CUDA backend yet: "no such GPU (NVML sees K GPUs: ...)" with why
 * NVML sees none, or, for a GPU that is there, that this kiln cannot run on it. */
kiln_status cli_device_check(const char *value);
/* cli_device_check for a command: -1 to go on (the CPU), or EXIT_USAGE after printing
 * "<command>: <message>" on stderr. */
int cli_device_require(const char *command, const char *value);

int cmd_info(int argc, char **argv);
int cmd_run(int argc, char **argv);
int cmd_bench(int argc, char **argv);
int cmd_conformance(int argc, char **argv);
int cmd_serve(int argc, char **argv);
int cmd_data(int argc, char **argv);
int cmd_train(int argc, char **argv);
int cmd_eval(int argc, char **argv);
/* `kiln registry push|list|show|verify|label|rollback|gc` (registry.c); argv[0] is "registry". */
int cmd_registry(int argc, char **argv);
/* `kiln validate VERSION_DIR` (validate.c): the CI gate. */
int cmd_validate(int argc, char **argv);
/* `kiln data schema infer`, `validate`, `stats`, `diff` (data_schema.c); argv[0] is the command. */
int cmd_data_schema(int argc, char **argv);
int cmd_data_validate(int argc, char **argv);
int cmd_data_stats(int argc, char **argv);
int cmd_data_diff(int argc, char **argv);

/* ---------------------------------------------------------------- kiln data */

struct kiln_dataset;

/* The flags every `kiln data` command takes to open its dataset. */
typedef struct cli_data_source {
  const char *pipeline;   /* --pipeline FILE.json */
  const char *on_error;   /* --on-error fail|skip */
  const char *quarantine; /* --quarantine FILE */
  long threads;           /* --threads N */
  int64_t batch;          /* not a flag: > 0 ends the pipeline with a batch stage of this size */
} cli_data_source;

#define CLI_DATA_SOURCE_FLAGS(src)                                                                            \
  {"pipeline", CLI_STRING, &(src).pipeline, "FILE", "pipeline JSON (a run file's data section); SOURCE replaces its source"}, \
  {"on-error", CLI_STRING, &(src).on_error, "MODE", "fail (default) or skip: bad records go to the quarantine"},   \
  {"quarantine", CLI_STRING, &(src).quarantine, "FILE", "quarantine file in skip mode (default quarantine.jsonl)"}, \
  {"threads", CLI_INT, &(src).threads, "N", "threads for parallel stages (default: CPU count)"}

/* Opens SOURCE (may be NULL) and/or src->pipeline. Returns -1 on success, else the exit code after
 * printing the error. */
int cli_data_open(const cli_data_source *src, const char *path, struct kiln_dataset **out);
/* The same, returning the error (a bad flag combination included) instead of printing it. */
kiln_status cli_data_open_status(const cli_data_source *src, const char *path, struct kiln_dataset **out);
/* "Q of N records quarantined (FILE)" or "N records read", on stderr. */
void cli_data_summary(const struct kiln_dataset *d);

/* ---------------------------------------------------------------- kiln eval */

/* What an evaluation found: records read, records whose arg-max output is their label, their
 * share, and the seconds the pass took. */
typedef struct cli_eval_result {
  int64_t records, correct;
  double accuracy, seconds;
} cli_eval_result;

/* kiln eval's core, shared with kiln validate: loads MODEL (a .onnx file, or a version folder with
 * model.onnx and maybe preprocess.json), runs it on every batch left in `d` (opened with a batch
 * stage, src.batch > 0) and counts arg-max hits against the feature `label`. Errors name the
 * feature or the model's problem; an empty dataset is one. */
kiln_status cli_eval_model(const char *model, struct kiln_dataset *d, const char *label, kiln_pool *pool,
                           cli_eval_result *out);

#endif
