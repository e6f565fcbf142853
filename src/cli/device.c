/* --device cpu|cuda[:N], shared by run, bench, serve, validate and train: the value parsed once
 * here, and a CUDA device looked up through NVML, because this kiln has no CUDA backend yet and
 * must say so instead of running on the CPU unasked. */
#include "cli/cli.h"
#include "kiln/obs.h"

#include <stdio.h>
#include <string.h>

kiln_status cli_device_parse(const char *value, cli_device *out) {
  out->cuda = 0;
  out->index = 0;
  if (!value || strcmp(value, "cpu") == 0) return NULL;
  if (strncmp(value, "cuda", 4) == 0 && (value[4] == '\0' || value[4] == ':')) {
    const char *digits = value[4] ? value + 5 : NULL;
    int index = 0, n = 0;
    /* digits only: no sign, no blank, no "0x", and few enough that the value cannot overflow */
    for (; digits && digits[n] >= '0' && digits[n] <= '9' && index <= CLI_DEVICE_MAX_INDEX; n++)
      index = index * 10 + (digits[n] - '0');
    if (!digits || (n > 0 && digits[n] == '\0' && index <= CLI_DEVICE_MAX_INDEX)) {
      out->cuda = 1;
      out->index = index;
      return NULL;
    }
  }
  return kiln_error(KILN_INVALID_ARGUMENT, "--device '%s': expected cpu, cuda or cuda:N (N a GPU index, 0 to %d)", value,
                    CLI_DEVICE_MAX_INDEX);
}

/* "2 GPUs: cuda:0 'NAME', cuda:1 'NAME'" into buf (cut when long: it only explains). */
static void describe_gpus(const kiln_gpu_reading *g, int n, char *buf, size_t size) {
  int used = snprintf(buf, size, "%d GPU%s", n, n == 1 ? "" : "s");
  for (int i = 0; i < n && used >= 0 && (size_t)used < size; i++)
    used += snprintf(buf + used, size - (size_t)used, "%scuda:%u '%s'", i ? ", " : ": ", g[i].index, g[i].name);
}

kiln_status cli_device_check(const char *value) {
  cli_device d;
  kiln_status s = cli_device_parse(value, &d);
  if (s || !d.cuda) return s;
  kiln_gpus *gpus = NULL;
  if ((s = kiln_gpus_open(&gpus))) {
    kiln_status e = kiln_error(KILN_UNAVAILABLE, "--device %s: no such GPU (NVML sees 0 GPUs: %s)", value, kiln_status_message(s));
    kiln_status_free(s);
    return e;
  }
  kiln_gpu_reading g[KILN_GPU_MAX];
  int n = kiln_gpus_read(gpus, g, KILN_GPU_MAX);
  kiln_gpus_close(gpus);
  const kiln_gpu_reading *found = NULL;
  for (int i = 0; i < n && !found; i++)
    if (g[i].index == (unsigned)d.index) found = &g[i];
  if (!found) {
    char seen[512];
    describe_gpus(g, n, seen, sizeof seen);
    return kiln_error(KILN_UNAVAILABLE, "--device %s: no such GPU (NVML sees %s)", value, seen);
  }
  /* the GPU is there, but nothing here can use it: say so rather than run on the CPU */
  return kiln_error(KILN_UNIMPLEMENTED, "--device %s ('%s'): this kiln has no CUDA backend yet; run with --device cpu", value,
                    found->name);
}

int cli_device_require(const char *command, const char *value) {
  kiln_status s = cli_device_check(value);
  if (!s) return -1;
  fprintf(stderr, "%s: %s\n", command, kiln_status_message(s));
  kiln_status_free(s);
  return EXIT_USAGE;
}
