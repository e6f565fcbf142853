/* `kiln <command>`: dispatch to the subcommands. */
#include "cli/cli.h"

#include <string.h>

/* Read by jemalloc, which the kiln binary links (CMakeLists.txt): freed pages go back to the system
 * at once instead of after jemalloc's default 10 s, so a server's RSS follows the models it holds
 * and a reloaded version's memory does not linger. Request-path allocations are small and reuse
 * their slabs, so this costs them nothing. Ignored where jemalloc is not linked. */
const char *malloc_conf = "background_thread:true,dirty_decay_ms:1000,muzzy_decay_ms:0";

static const struct {
  const char *name;
  int (*fn)(int, char **);
  const char *summary;
} commands[] = {
    {"info", cmd_info, "show a model's inputs, outputs, opsets, operators and parameters"},
    {"run", cmd_run, "run a model once on .npy / .pb inputs and write its outputs as .npy"},
    {"bench", cmd_bench, "measure latency and throughput on synthetic inputs"},
    {"conformance", cmd_conformance, "run ONNX backend test cases and compare with their expected outputs"},
    {"serve", cmd_serve, "serve models over TF Serving's REST API and KServe V2, with metrics"},
    {"train", cmd_train, "train a Keras-style model on a data pipeline (Fashion-MNIST by default), with MPI"},
    {"eval", cmd_eval, "evaluate an exported classifier's accuracy on a dataset"},
    {"registry", cmd_registry, "the model repository: push, list, show, verify, label, rollback, gc"},
    {"validate", cmd_validate, "the CI gate for a version: signature, golden outputs, accuracy, latency"},
    {"data", cmd_data, "read, check, convert and time datasets (cat, convert, bench, schema, validate, stats, diff)"},
};

static void usage(FILE *f) {
  fprintf(f, "usage: kiln <command> [flags]\n\ncommands:\n");
  for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
    fprintf(f, "  %-12s %s\n", commands[i].name, commands[i].summary);
  fprintf(f, "  %-12s %s\n\nRun 'kiln <command> --help' for a command's flags.\n", "version", "print the version");
}

int main(int argc, char **argv) {
  if (argc < 2) {
    usage(stderr);
    return EXIT_USAGE;
  }
  const char *cmd = argv[1];
  if (strcmp(cmd, "--help") == 0 || strcmp(cmd, "-h") == 0 || strcmp(cmd, "help") == 0) {
    usage(stdout);
    return EXIT_OK;
  }
  if (strcmp(cmd, "version") == 0 || strcmp(cmd, "--version") == 0) {
    printf("kiln %s\n", kiln_version());
    return EXIT_OK;
  }
  for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
    if (strcmp(cmd, commands[i].name) == 0) return commands[i].fn(argc - 1, argv + 1);
  fprintf(stderr, "kiln: unknown command '%s'\n\n", cmd);
  usage(stderr);
  return EXIT_USAGE;
}
