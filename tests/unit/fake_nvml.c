/* A stand-in for NVIDIA's libnvidia-ml.so.1 with two devices whose numbers the tests know, so that
 * kiln's NVML loading and GPU metrics are tested on machines without a GPU. Knobs (read at each
 * call): FAKE_NVML_INIT_RESULT=<n> makes nvmlInit_v2 return n; FAKE_NVML_NO_UTILIZATION=1 makes
 * device 1's utilization "not supported" (NVML_ERROR_NOT_SUPPORTED, 3). */
#include <stdlib.h>
#include <string.h>

typedef struct fake_device {
  const char *name;
  unsigned int utilization_gpu, utilization_memory; /* percent */
  unsigned long long total, used;                   /* bytes */
} fake_device;

typedef struct fake_utilization {
  unsigned int gpu, memory;
} fake_utilization;

typedef struct fake_memory {
  unsigned long long total, free, used;
} fake_memory;

/* the second name holds both characters the exposition format must escape in a label value */
static const fake_device devices[2] = {
    {"Fake GPU A", 37, 12, 17179869184ULL, 1073741824ULL},
    {"Fake \"B\" \\ 80GB", 100, 55, 85899345920ULL, 42949672960ULL},
};

/* nvmlInit_v2 calls not yet balanced by nvmlShutdown (NVML counts them the same way) */
static int initialized;

/* For tests: how many initialisations are open now. */
int fake_nvml_open_inits(void) { return initialized; }

int nvmlInit_v2(void) {
  const char *forced = getenv("FAKE_NVML_INIT_RESULT");
  int r = forced ? atoi(forced) : 0;
  if (r == 0) initialized++;
  return r;
}

int nvmlShutdown(void) {
  if (initialized == 0) return 1; /* NVML_ERROR_UNINITIALIZED */
  initialized--;
  return 0;
}

int nvmlDeviceGetCount_v2(unsigned int *count) {
  if (!initialized) return 1;
  *count = 2;
  return 0;
}

int nvmlDeviceGetHandleByIndex_v2(unsigned int index, const fake_device **device) {
  if (!initialized) return 1;
  if (index >= 2) return 2; /* NVML_ERROR_INVALID_ARGUMENT */
  *device = &devices[index];
  return 0;
}

int nvmlDeviceGetName(const fake_device *device, char *name, unsigned int length) {
  if (strlen(device->name) + 1 > length) return 7; /* NVML_ERROR_INSUFFICIENT_SIZE */
  strcpy(name, device->name);
  return 0;
}

int nvmlDeviceGetUtilizationRates(const fake_device *device, fake_utilization *u) {
  const char *off = getenv("FAKE_NVML_NO_UTILIZATION");
  if (off && strcmp(off, "1") == 0 && device == &devices[1]) return 3;
  u->gpu = device->utilization_gpu;
  u->memory = device->utilization_memory;
  return 0;
}

int nvmlDeviceGetMemoryInfo(const fake_device *device, fake_memory *m) {
  m->total = device->total;
  m->used = device->used;
  m->free = device->total - device->used;
  return 0;
}
