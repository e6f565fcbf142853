/* Flag parsing for every subcommand: --flag=value and --flag value, kebab-case or snake_case,
 * repeatable list flags, and generated --help. */
#include "cli/cli.h"

#include <errno.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

/* Compares flag names treating '-' and '_' as the same character. */
static int same_name(const char *a, const char *b, size_t blen) {
  size_t i = 0;
  for (; a[i] && i < blen; i++) {
    char x = a[i] == '_' ? '-' : a[i], y = b[i] == '_' ? '-' : b[i];
    if (x != y) return 0;
  }
  return a[i] == '\0' && i == blen;
}

static void print_help(const cli_spec *spec) {
  printf("usage: %s %s\n\n%s\n", spec->command, spec->usage, spec->summary);
  if (spec->flags && spec->flags[0].name) printf("\nflags:\n");
  for (const cli_flag *f = spec->flags; f && f->name; f++) {
    char left[64];
    snprintf(left, sizeof left, "--%s%s%s", f->name, f->arg ? " " : "", f->arg ? f->arg : "");
    printf("  %-28s %s\n", left, f->help);
  }
  printf("  %-28s %s\n", "--help", "show this help");
}

static int usage_error(const cli_spec *spec, const char *fmt, const char *what) {
  fprintf(stderr, "%s: ", spec->command);
  fprintf(stderr, fmt, what);
  fprintf(stderr, "\n(run '%s --help' for usage)\n", spec->command);
  return EXIT_USAGE;
}

static int list_push(cli_list *l, const char *item) {
  const char **items = realloc(l->items, (size_t)(l->count + 1) * sizeof *items);
  if (!items) return -1;
  items[l->count++] = item;
  l->items = items;
  return 0;
}

int cli_parse(const cli_spec *spec, int argc, char **argv, cli_list *positional) {
  memset(positional, 0, sizeof *positional);
  int only_positional = 0;
  for (int i = 1; i < argc; i++) {
    const char *a = argv[i];
    if (only_positional || a[0] != '-' || a[1] == '\0') {
      if (list_push(positional, a)) return usage_error(spec, "%s", "out of memory");
      continue;
    }
    if (strcmp(a, "--") == 0) {
      only_positional = 1;
      continue;
    }
    if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
      print_help(spec);
      cli_list_free(positional);
      return EXIT_OK;
    }
    const char *name = a + (a[1] == '-' ? 2 : 1);
    const char *eq = strchr(name, '=');
    size_t len = eq ? (size_t)(eq - name) : strlen(name);
    const cli_flag *f = spec->flags;
    while (f && f->name && !same_name(f->name, name, len)) f++;
    if (!f || !f->name) {
      cli_list_free(positional);
      return usage_error(spec, "unknown flag '%s'", a);
    }
    const char *value = NULL;
    if (f->kind == CLI_BOOL) {
      if (eq && strcmp(eq + 1, "true") != 0 && strcmp(eq + 1, "false") != 0 && strcmp(eq + 1, "1") != 0 && strcmp(eq + 1, "0") != 0) {
        cli_list_free(positional);
        return usage_error(spec, "flag '%s' takes true or false", a);
      }
      *(int *)f->dest = !eq || strcmp(eq + 1, "true") == 0 || strcmp(eq + 1, "1") == 0;
      continue;
    }
    if (eq) value = eq + 1;
    else if (i + 1 < argc) value = argv[++i];
    else {
      cli_list_free(positional);
      return usage_error(spec, "flag '%s' needs a value", a);
    }
    char *end;
    errno = 0;
    switch (f->kind) {
    case CLI_STRING: *(const char **)f->dest = value; break;
    case CLI_LIST:
      if (list_push(f->dest, value)) return usage_error(spec, "%s", "out of memory");
      break;
    case CLI_INT: {
      long v = strtol(value, &end, 10);
      if (errno || end == value || *end) {
        cli_list_free(positional);
        return usage_error(spec, "flag value '%s' is not an integer", value);
      }
      *(long *)f->dest = v;
      break;
    }
    case CLI_DOUBLE: {
      double v = strtod(value, &end);
      if (errno || end == value || *end) {
        cli_list_free(positional);
        return usage_error(spec, "flag value '%s' is not a number", value);
      }
      *(double *)f->dest = v;
      break;
    }
    case CLI_BOOL: break;
    }
  }
  if (positional->count < spec->min_args || (spec->max_args >= 0 && positional->count > spec->max_args)) {
    const char *what = positional->count < spec->min_args ? "missing arguments" : "too many arguments";
    cli_list_free(positional);
    fprintf(stderr, "%s: %s\nusage: %s %s\n", spec->command, what, spec->command, spec->usage);
    return EXIT_USAGE;
  }
  return -1;
}

void cli_list_free(cli_list *l) {
  free(l->items);
  memset(l, 0, sizeof *l);
}

int cli_fail(kiln_status s) {
  fprintf(stderr, "kiln: %s\n", kiln_status_message(s));
  kiln_status_free(s);
  return EXIT_USAGE;
}

int cli_path(char *buf, size_t size, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  int n = vsnprintf(buf, size, fmt, ap);
  va_end(ap);
  if (n < 0 || (size_t)n >= size) {
    if (size) buf[0] = '\0';
    return -1;
  }
  return 0;
}

static void group_usage(FILE *f, const char *group, const cli_command *commands, int n, const char *epilogue) {
  fprintf(f, "usage: kiln %s <command> [args] [flags]\n\ncommands:\n", group);
  for (int i = 0; i < n; i++) fprintf(f, "  %-10s %s\n", commands[i].name, commands[i].summary);
  fprintf(f, "\n%s\n", epilogue);
}

int cli_dispatch(const char *group, const cli_command *commands, int n, const char *epilogue, int argc, char **argv) {
  if (argc < 2) {
    group_usage(stderr, group, commands, n, epilogue);
    return EXIT_USAGE;
  }
  if (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0 || strcmp(argv[1], "help") == 0) {
    group_usage(stdout, group, commands, n, epilogue);
    return EXIT_OK;
  }
  for (int i = 0; i < n; i++)
    if (strcmp(argv[1], commands[i].name) == 0) return commands[i].fn(argc - 1, argv + 1);
  fprintf(stderr, "kiln %s: unknown command '%s'\n\n", group, argv[1]);
  group_usage(stderr, group, commands, n, epilogue);
  return EXIT_USAGE;
}
