/* `kiln registry list` (a table of models and versions) and `kiln registry show` (one version's
 * manifest and labels): what an operator reads before labelling or rolling back. */
#include "cli/registry.h"

#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#define REPO_FLAG(repo) {"repo", CLI_STRING, &(repo), "DIR", "the model repository (default $KILN_REPO, else ./models)"}
#define MAX_MODELS 100000

static void human_size(long long bytes, char *out, size_t size) {
  static const char *const units[] = {"KiB", "MiB", "GiB", "TiB"};
  if (bytes < 1024) {
    snprintf(out, size, "%lld B", bytes);
    return;
  }
  double v = (double)bytes / 1024;
  int u = 0;
  while (v >= 1024 && u < 3) v /= 1024, u++;
  snprintf(out, size, "%.1f %s", v, units[u]);
}

/* "stable, canary" (or "-"), with "rejected" for a rejected version. */
static void labels_of(const kiln_labels *l, int64_t version, char *out, size_t size) {
  size_t len = 0;
  out[0] = '\0';
  for (int i = 0; i <= l->n_labels; i++) {
    const char *name = i < l->n_labels ? (l->labels[i].version == version ? l->labels[i].name : NULL)
                                       : (kiln_labels_rejection(l, version) ? "rejected" : NULL);
    if (!name) continue;
    int n = snprintf(out + len, size - len, "%s%s", len ? "," : "", name);
    if (n < 0 || (size_t)n >= size - len) break; /* a full column: the rest is left out */
    len += (size_t)n;
  }
  if (!len) snprintf(out, size, "-");
}

static int cmp_str(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

/* The model folders in the repository, sorted (hidden entries aside). */
static kiln_status models_in(const char *repo, char ***out, int *n) {
  *out = NULL, *n = 0;
  DIR *d = opendir(repo);
  if (!d) return kiln_error(errno == ENOENT ? KILN_NOT_FOUND : KILN_IO, "%s: %s", repo, errno == ENOENT ? "no such repository folder" : strerror(errno));
  kiln_status s = NULL;
  char **names = NULL;
  int count = 0;
  for (struct dirent *e; !s && (e = readdir(d));) {
    char path[4200];
    struct stat st;
    if (e->d_name[0] == '.' || !kiln_registry_model_name_ok(e->d_name) || cli_path(path, sizeof path, "%s/%s", repo, e->d_name) ||
        stat(path, &st) != 0 || !S_ISDIR(st.st_mode))
      continue;
    char **p = count < MAX_MODELS ? realloc(names, (size_t)(count + 1) * sizeof *p) : NULL;
    if (p) names = p;
    if (!p || !(names[count] = strdup(e->d_name))) s = kiln_error(KILN_RESOURCE_EXHAUSTED, "%s: too many models to list", repo);
    else count++;
  }
  closedir(d);
  if (count > 1) qsort(names, (size_t)count, sizeof *names, cmp_str);
  *out = names, *n = count;
  return s;
}

/* The rows of one model; a problem with one version shows in its row, not as a failure. */
static kiln_status list_model(const char *repo, const char *name, int width) {
  char dir[4200];
  if (cli_path(dir, sizeof dir, "%s/%s", repo, name)) return kiln_error(KILN_INVALID_ARGUMENT, "path too long");
  int64_t *versions = NULL;
  int n = 0;
  kiln_labels labels;
  kiln_status s = kiln_registry_versions(dir, &versions, &n);
  if (s) return s;
  if ((s = kiln_labels_read(dir, &labels))) {
    free(versions);
    return s;
  }
  if (n == 0) printf("%-*s  %7s  %-20s  %-20s  %10s\n", width, name, "-", "-", "-", "-");
  for (int i = 0; i < n; i++) {
    char vdir[4300], created[80] = "-", size[32] = "-", tags[256];
    int files;
    long long bytes;
    labels_of(&labels, versions[i], tags, sizeof tags);
    kiln_status m = cli_path(vdir, sizeof vdir, "%s/%lld", dir, (long long)versions[i]) ? kiln_error(KILN_INVALID_ARGUMENT, "path too long")
                                                                                         : cli_manifest_summary(vdir, &files, &bytes, created, sizeof created);
    if (!m) human_size(bytes, size, sizeof size);
    else snprintf(created, sizeof created, kiln_status_code(m) == KILN_NOT_FOUND ? "(no manifest)" : "(bad manifest)");
    kiln_status_free(m);
    printf("%-*s  %7lld  %-20s  %-20s  %10s\n", width, name, (long long)versions[i], tags, created, size);
  }
  kiln_labels_free(&labels);
  free(versions);
  return NULL;
}

int cmd_registry_list(int argc, char **argv) {
  const char *repo = NULL;
  const cli_flag flags[] = {REPO_FLAG(repo), {0}};
  const cli_spec spec = {"kiln registry list", "[NAME] [--repo DIR]",
                         "A table of the repository's models (or of NAME) and their versions: labels (\"rejected\" for a\n"
                         "version the server rejected), creation time and size from the manifest.",
                         flags, 0, 1};
  cli_list args;
  int rc = cli_parse(&spec, argc, argv, &args);
  if (rc >= 0) return rc;
  const char *dir = cli_repo(repo);
  char **names = NULL;
  const char *only = NULL; /* NAME, when given */
  int n = 0;
  kiln_status s = NULL;
  if (args.count == 1) {
    char path[4200];
    rc = cli_model_dir(spec.command, repo, args.items[0], path, sizeof path);
    only = args.items[0];
    n = 1;
  } else s = models_in(dir, &names, &n);
  int width = 5;
  for (int i = 0; i < n; i++) {
    int w = (int)strlen(only ? only : names[i]);
    if (w > width) width = w;
  }
  if (rc < 0 && !s) printf("%-*s  %7s  %-20s  %-20s  %10s\n", width, "MODEL", "VERSION", "LABELS", "CREATED", "SIZE");
  for (int i = 0; rc < 0 && !s && i < n; i++) s = list_model(dir, only ? only : names[i], width);
  if (s) rc = cli_fail(s);
  for (int i = 0; names && i < n; i++) free(names[i]);
  free(names);
  cli_list_free(&args);
  return rc < 0 ? EXIT_OK : rc;
}

int cmd_registry_show(int argc, char **argv) {
  const char *repo = NULL;
  const cli_flag flags[] = {REPO_FLAG(repo), {0}};
  const cli_spec spec = {"kiln registry show", "NAME [VERSION] [--repo DIR]",
                         "Prints a version's labels and its manifest.json (the newest version when none is given).", flags, 1, 2};
  cli_list args;
  int rc = cli_parse(&spec, argc, argv, &args);
  if (rc >= 0) return rc;
  char dir[4096], vdir[4200];
  int64_t version = -1, *versions = NULL;
  int n = 0;
  kiln_labels labels = {0};
  kiln_status s = NULL;
  rc = cli_model_dir(spec.command, repo, args.items[0], dir, sizeof dir);
  if (rc < 0 && args.count == 2) rc = cli_version_arg(spec.command, args.items[1], &version);
  if (rc < 0 && !(s = kiln_registry_versions(dir, &versions, &n))) {
    int found = 0;
    for (int i = 0; i < n; i++) found |= versions[i] == version;
    if (version < 0 && n > 0) version = versions[n - 1], found = 1;
    if (!found) s = version < 0 ? kiln_error(KILN_NOT_FOUND, "%s: no versions", dir) : kiln_error(KILN_NOT_FOUND, "%s: no version %lld", dir, (long long)version);
  }
  if (rc < 0 && !s) s = kiln_labels_read(dir, &labels);
  if (rc < 0 && !s && cli_path(vdir, sizeof vdir, "%s/%lld", dir, (long long)version)) s = kiln_error(KILN_INVALID_ARGUMENT, "path too long");
  char *text = NULL;
  size_t len = 0;
  if (rc < 0 && !s) {
    kiln_status m = kiln_manifest_read(vdir, &text, &len);
    if (m && kiln_status_code(m) != KILN_NOT_FOUND) s = m;
    else kiln_status_free(m);
  }
  if (rc < 0 && !s) {
    char tags[256];
    labels_of(&labels, version, tags, sizeof tags);
    printf("model:    %s\nversion:  %lld\nfolder:   %s\nlabels:   %s\n", args.items[0], (long long)version, vdir, tags);
    const kiln_rejection *r = kiln_labels_rejection(&labels, version);
    if (r) printf("rejected: %s (at %s)\n", r->reason, r->at);
    if (text) printf("manifest.json:\n%s%s", text, len && text[len - 1] == '\n' ? "" : "\n");
    else printf("manifest.json: none (an unverified version)\n");
    rc = EXIT_OK;
  }
  if (s) rc = cli_fail(s);
  free(text);
  free(versions);
  kiln_labels_free(&labels);
  cli_list_free(&args);
  return rc;
}
