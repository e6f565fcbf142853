#include "train/trainer.h"
kiln_status kiln_trainer_export(kiln_trainer *t, const char *dir) { return kiln_error(KILN_UNIMPLEMENTED, "not yet"); }
