/* The version string, set by the build from the project version. */
#include "kiln/core.h"

#ifndef KILN_VERSION
#define KILN_VERSION "0.0.0-dev"
#endif

const char *kiln_version(void) { return KILN_VERSION; }
