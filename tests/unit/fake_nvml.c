/* A stand-in for NVIDIA's libnvidia-ml.so.1 with two devices whose numbers the tests know, so that
 * kiln's NVML loading and GPU metrics are tested on machines without a GPU. Knobs (read at each
 * call): FAKE_NVML_INIT_RESULT=<n> makes nvmlInit_v2 return n; FAKE_NVML_NO_UTILIZATION=1,
 * FAKE_NVML_NO_TEMPERATURE=1 and FAKE_NVML_NO_POWER=1 make device 1's reading "not supported"
 * (NVML_ERROR_NOT_SUPPORTED, 3). Built with FAKE_NVML_OLD_DRIVER defined it lacks the optional
 * nvmlDeviceGetTemperature and nvmlDeviceGetPowerUsage, as drivers before NVML 5's do. */
#include <stdlib.h>
#include <string.h>

typedef struct fake_device {
  const char *name;
  unsigned int utilization_gpu, utilization_memory; /* percent */
  unsigned long long total, used;                   /* bytes */
  unsigned int celsius, milliwatts;
} fake_device;

typedef struct fake_utilization {
  unsigned int gpu, memory;
} fake_utilization;

typedef struct fake_memory {
  unsigned long long total, free, used;
} fake_memory;

/* the second name holds both characters the exposition format must escape in a label value */
static const fake_device devices[2] = {
    {"Fake GPU A", 37, 12, 17179869184ULL, 1073741824ULL, 41, 71500},
    {"Fake \"B\" \\ 80GB", 100, 55, 85899345920ULL, 42949672960ULL, 83, 349999},
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

/* Whether the knob `variable` turns `device`'s reading off (device 1 only). */
static int refused(const char *variable, const fake_device *device) {
  const char *off = getenv(variable);
  return off && strcmp(off, "1") == 0 && device == &devices[1];
}

int nvmlDeviceGetUtilizationRates(const fake_device *device, fake_utilization *u) {
  if (refused("FAKE_NVML_NO_UTILIZATION", device)) return 3;
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

#ifndef FAKE_NVML_OLD_DRIVER
int nvmlDeviceGetTemperature(const fake_device *device, int sensor, unsigned int *celsius) {
  if (sensor != 0) return 2; /* only NVML_TEMPERATURE_GPU exists */
  if (refused("FAKE_NVML_NO_TEMPERATURE", device)) return 3;
  *celsius = device->celsius;
  return 0;
}

int nvmlDeviceGetPowerUsage(const fake_device *device, unsigned int *milliwatts) {
  if (refused("FAKE_NVML_NO_POWER", device)) return 3;
  *milliwatts = device->milliwatts;
  return 0;
}
#endif
