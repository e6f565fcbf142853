/* `kiln registry`: push, verify, label, rollback and gc of the model repository's versions (list
 * and show are in registry_list.c). Thin: flags in, the registry library, a verdict out. */
#include "cli/registry.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#define REPO_FLAG(repo) {"repo", CLI_STRING, &(repo), "DIR", "the model repository (default $KILN_REPO, else ./models)"}

const char *cli_repo(const char *flag) {
  if (flag) return flag;
  const char *env = getenv("KILN_REPO");
  return env && env[0] ? env : "./models";
}

int cli_model_dir(const char *command, const char *repo, const char *name, char *out, size_t size) {
  if (!kiln_registry_model_name_ok(name)) {
    fprintf(stderr, "%s: '%s' is not a model name ([A-Za-z0-9_.-], 1 to 128 characters, not . or ..)\n", command, name);
    return EXIT_USAGE;
  }
  if (cli_path(out, size, "%s/%s", cli_repo(repo), name)) {
    fprintf(stderr, "%s: the repository path is too long\n", command);
    return EXIT_USAGE;
  }
  return -1;
}

int cli_version_arg(const char *command, const char *arg, int64_t *version) {
  if (!kiln_version_folder(arg, version)) {
    fprintf(stderr, "%s: '%s' is not a version number (digits, at most 18)\n", command, arg);
    return EXIT_USAGE;
  }
  return -1;
}

kiln_status cli_manifest_summary(const char *version_dir, int *files, long long *bytes, char *created, size_t size) {
  char *text;
  size_t len;
  kiln_status s = kiln_manifest_read(version_dir, &text, &len);
  if (s) return s;
  s = kiln_manifest_check(text, len, "manifest.json");
  cJSON *root = s ? NULL : cJSON_ParseWithLength(text, len);
  free(text);
  if (!s && !root) s = kiln_error(KILN_RESOURCE_EXHAUSTED, "out of memory");
  if (s) return kiln_status_prefix(s, "%s: ", version_dir);
  const cJSON *f, *c = cJSON_GetObjectItemCaseSensitive(root, "created");
  *files = 0, *bytes = 0;
  cJSON_ArrayForEach(f, cJSON_GetObjectItemCaseSensitive(root, "files")) {
    (*files)++;
    *bytes += (long long)cJSON_GetObjectItemCaseSensitive(f, "bytes")->valuedouble;
  }
  snprintf(created, size, "%s", c->valuestring);
  cJSON_Delete(root);
  return NULL;
}

/* ---------------------------------------------------------------- push */

static int push(int argc, char **argv) {
  const char *repo = NULL, *name = NULL;
  cli_list meta_args = {0};
  const cli_flag flags[] = {
      {"name", CLI_STRING, &name, "NAME", "the model's name: its folder in the repository (required)"},
      {"meta", CLI_LIST, &meta_args, "KEY=VALUE", "a manifest meta entry (repeatable)"},
      REPO_FLAG(repo),
      {0},
  };
  const cli_spec spec = {"kiln registry push", "FILE --name NAME [--meta KEY=VALUE ...] [--repo DIR]",
                         "Creates the model's next version (REPO/NAME/<highest + 1>) from FILE, an .onnx file (stored as\n"
                         "model.onnx) or a folder holding model.onnx with preprocess.json, schema.json, warmup/ ...\n"
                         "Writes manifest.json (every file's size and SHA-256, the time, kiln's and its libraries'\n"
                         "versions) and publishes the version atomically. Prints the version number on stdout.",
                         flags, 1, 1};
  cli_list args;
  int rc = cli_parse(&spec, argc, argv, &args);
  if (rc >= 0) {
    cli_list_free(&meta_args);
    return rc;
  }
  char dir[4096];
  kiln_registry_meta *meta = NULL;
  if (!name) {
    fprintf(stderr, "kiln registry push: --name NAME is required\n");
    rc = EXIT_USAGE;
  }
  if (rc < 0) rc = cli_model_dir("kiln registry push", repo, name, dir, sizeof dir);
  if (rc < 0 && meta_args.count > 0 && !(meta = calloc((size_t)meta_args.count, sizeof *meta))) rc = cli_fail(kiln_error(KILN_RESOURCE_EXHAUSTED, "out of memory"));
  char *copies = NULL;
  size_t total = 0;
  for (int i = 0; rc < 0 && i < meta_args.count; i++) total += strlen(meta_args.items[i]) + 1;
  if (rc < 0 && total && !(copies = malloc(total))) rc = cli_fail(kiln_error(KILN_RESOURCE_EXHAUSTED, "out of memory"));
  char *p = copies;
  for (int i = 0; rc < 0 && i < meta_args.count; i++) {
    size_t n = strlen(meta_args.items[i]) + 1;
    memcpy(p, meta_args.items[i], n);
    char *eq = strchr(p, '=');
    if (!eq || eq == p) {
      fprintf(stderr, "kiln registry push: --meta '%s': KEY=VALUE expected\n", meta_args.items[i]);
      rc = EXIT_USAGE;
      break;
    }
    *eq = '\0';
    meta[i] = (kiln_registry_meta){p, eq + 1};
    p += n;
  }
  if (rc < 0) {
    kiln_push_options o = {.model_dir = dir, .source = args.items[0], .meta = meta, .n_meta = meta_args.count};
    int64_t version;
    int files = 0;
    long long bytes = 0;
    char created[80], version_dir[4200];
    kiln_status s = kiln_registry_push(&o, &version);
    if (!s && cli_path(version_dir, sizeof version_dir, "%s/%lld", dir, (long long)version))
      s = kiln_error(KILN_INVALID_ARGUMENT, "path too long");
    if (!s) s = cli_manifest_summary(version_dir, &files, &bytes, created, sizeof created);
    if (s) rc = cli_fail(s);
    else {
      fprintf(stderr, "pushed %s version %lld (%d files, %lld bytes)\n", name, (long long)version, files, bytes);
      printf("%lld\n", (long long)version);
      rc = EXIT_OK;
    }
  }
  free(copies);
  free(meta);
  cli_list_free(&meta_args);
  cli_list_free(&args);
  return rc;
}

/* ---------------------------------------------------------------- verify */

/* The exit code a failed verification maps to: a file that cannot be read is an I/O error (2);
 * everything else (changed, missing, extra, bad or no manifest) is a failed check (1). */
static int verdict(kiln_status s) {
  kiln_code c = kiln_status_code(s);
  return c == KILN_IO || c == KILN_RESOURCE_EXHAUSTED || c == KILN_INTERNAL ? EXIT_USAGE : EXIT_CHECK_FAILED;
}

static int verify(int argc, char **argv) {
  const char *repo = NULL;
  const cli_flag flags[] = {REPO_FLAG(repo), {0}};
  const cli_spec spec = {"kiln registry verify", "NAME [VERSION] [--repo DIR]",
                         "Checks versions against their manifests: every listed file present with its size and SHA-256,\n"
                         "and no other file. Every version when none is given; prints each version's verdict.\n"
                         "Exit 0 when all match, 1 when one does not (or has no manifest), 2 on usage or I/O errors.",
                         flags, 1, 2};
  cli_list args;
  int rc = cli_parse(&spec, argc, argv, &args);
  if (rc >= 0) return rc;
  char dir[4096];
  int64_t one = -1, *versions = NULL;
  int n = 0;
  rc = cli_model_dir(spec.command, repo, args.items[0], dir, sizeof dir);
  if (rc < 0 && args.count == 2) rc = cli_version_arg(spec.command, args.items[1], &one);
  kiln_status s = NULL;
  if (rc < 0) s = kiln_registry_versions(dir, &versions, &n);
  if (s) rc = cli_fail(s);
  if (rc < 0 && one >= 0) {
    int found = 0;
    for (int i = 0; i < n; i++) found |= versions[i] == one;
    if (!found) rc = cli_fail(kiln_error(KILN_NOT_FOUND, "%s: no version %lld", dir, (long long)one));
    else versions[0] = one, n = 1;
  }
  if (rc < 0 && n == 0) printf("%s: no versions\n", args.items[0]);
  for (int i = 0; rc < 0 && i < n; i++) {
    char vdir[4200];
    if (cli_path(vdir, sizeof vdir, "%s/%lld", dir, (long long)versions[i])) s = kiln_error(KILN_INVALID_ARGUMENT, "path too long");
    else s = kiln_manifest_verify(vdir);
    if (!s) printf("%s version %lld: ok\n", args.items[0], (long long)versions[i]);
    else {
      printf("%s version %lld: FAILED: %s\n", args.items[0], (long long)versions[i], kiln_status_message(s));
      int v = verdict(s);
      if (v > rc) rc = v; /* 2 outranks 1; rc is -1 while all pass */
      kiln_status_free(s);
    }
  }
  if (rc < 0) rc = EXIT_OK;
  free(versions);
  cli_list_free(&args);
  return rc;
}

/* ---------------------------------------------------------------- label, rollback */

static int label(int argc, char **argv) {
  const char *repo = NULL;
  const cli_flag flags[] = {REPO_FLAG(repo), {0}};
  const cli_spec spec = {"kiln registry label", "NAME VERSION LABEL [--repo DIR]",
                         "Points LABEL ([A-Za-z0-9_.-], up to 64 characters: stable, canary, ...) at VERSION in the\n"
                         "model's labels.json; the server follows it without a restart. Labelling a version stable\n"
                         "keeps the previous stable for rollback and promotes a canary of the same version; labelling\n"
                         "a rejected version clears its rejection.",
                         flags, 3, 3};
  cli_list args;
  int rc = cli_parse(&spec, argc, argv, &args);
  if (rc >= 0) return rc;
  char dir[4096];
  int64_t version;
  rc = cli_model_dir(spec.command, repo, args.items[0], dir, sizeof dir);
  if (rc < 0) rc = cli_version_arg(spec.command, args.items[1], &version);
  if (rc < 0) {
    kiln_status s = kiln_registry_label(dir, version, args.items[2]);
    if (s) rc = cli_fail(s);
    else {
      fprintf(stderr, "%s: %s is version %lld\n", args.items[0], args.items[2], (long long)version);
      rc = EXIT_OK;
    }
  }
  cli_list_free(&args);
  return rc;
}

static int rollback(int argc, char **argv) {
  const char *repo = NULL;
  const cli_flag flags[] = {REPO_FLAG(repo), {0}};
  const cli_spec spec = {"kiln registry rollback", "NAME [--repo DIR]",
                         "Moves the stable label back to the previous stable version (the newest earlier stable that is\n"
                         "still present and not rejected). Prints the new stable version on stdout.",
                         flags, 1, 1};
  cli_list args;
  int rc = cli_parse(&spec, argc, argv, &args);
  if (rc >= 0) return rc;
  char dir[4096];
  rc = cli_model_dir(spec.command, repo, args.items[0], dir, sizeof dir);
  int64_t stable;
  kiln_status s = NULL;
  if (rc < 0 && (s = kiln_registry_rollback(dir, &stable))) rc = cli_fail(s);
  if (rc < 0) {
    fprintf(stderr, "%s: stable rolled back to version %lld\n", args.items[0], (long long)stable);
    printf("%lld\n", (long long)stable);
    rc = EXIT_OK;
  }
  cli_list_free(&args);
  return rc;
}

/* ---------------------------------------------------------------- gc */

static int gc(int argc, char **argv) {
  const char *repo = NULL;
  long keep = -1;
  const cli_flag flags[] = {{"keep", CLI_INT, &keep, "K", "how many of the newest versions to keep (required)"}, REPO_FLAG(repo), {0}};
  const cli_spec spec = {"kiln registry gc", "NAME --keep K [--repo DIR]",
                         "Deletes all but the newest K versions of a model, never a labelled one.", flags, 1, 1};
  cli_list args;
  int rc = cli_parse(&spec, argc, argv, &args);
  if (rc >= 0) return rc;
  char dir[4096];
  if (keep < 0 || keep > 1000000) {
    fprintf(stderr, "kiln registry gc: --keep K (0 or more) is required\n");
    rc = EXIT_USAGE;
  }
  if (rc < 0) rc = cli_model_dir(spec.command, repo, args.items[0], dir, sizeof dir);
  if (rc < 0) {
    int64_t *removed = NULL;
    int n = 0;
    kiln_status s = kiln_registry_gc(dir, (int)keep, &removed, &n);
    for (int i = 0; i < n; i++) fprintf(stderr, "removed %s version %lld\n", args.items[0], (long long)removed[i]);
    free(removed);
    if (s) rc = cli_fail(s);
    else {
      fprintf(stderr, "%s: removed %d version%s\n", args.items[0], n, n == 1 ? "" : "s");
      rc = EXIT_OK;
    }
  }
  cli_list_free(&args);
  return rc;
}

/* ---------------------------------------------------------------- dispatch */

static const cli_command commands[] = {
    {"push", push, "store a model as the next version, with its manifest"},
    {"list", cmd_registry_list, "a table of models and versions: labels, creation time, size"},
    {"show", cmd_registry_show, "a version's manifest and labels"},
    {"verify", verify, "check versions against their manifests (exit 1 on a mismatch)"},
    {"label", label, "point a label (stable, canary, ...) at a version"},
    {"rollback", rollback, "move stable back to the previous stable version"},
    {"gc", gc, "delete all but the newest K versions, never a labelled one"},
};

int cmd_registry(int argc, char **argv) {
  return cli_dispatch("registry", commands, (int)(sizeof commands / sizeof commands[0]),
                      "The repository is --repo DIR, else $KILN_REPO, else ./models; it is the server's layout\n"
                      "(REPO/NAME/<version>/model.onnx). Run 'kiln registry <command> --help' for a command's flags.", argc, argv);
}
