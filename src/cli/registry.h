/* What the `kiln registry` commands share (registry.c, registry_list.c). */
#ifndef KILN_CLI_REGISTRY_H
#define KILN_CLI_REGISTRY_H

#include "cli/cli.h"
#include "kiln/registry.h"

/* The repository: the --repo flag's value when given, else $KILN_REPO (when set and not empty),
 * else ./models. */
const char *cli_repo(const char *flag);
/* REPO/NAME into out after checking NAME; -1 to go on, else the exit code (the message printed). */
int cli_model_dir(const char *command, const char *repo, const char *name, char *out, size_t size);
/* A VERSION argument; -1 to go on, else the exit code (the message printed). */
int cli_version_arg(const char *command, const char *arg, int64_t *version);
/* From a version's manifest: its file count, total bytes and creation time. */
kiln_status cli_manifest_summary(const char *version_dir, int *files, long long *bytes, char *created, size_t size);

/* `kiln registry list` and `kiln registry show` (registry_list.c). */
int cmd_registry_list(int argc, char **argv);
int cmd_registry_show(int argc, char **argv);

#endif
