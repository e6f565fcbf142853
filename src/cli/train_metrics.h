/* `kiln train --metrics-port`: Prometheus metrics of a training run, served by rank 0. */
#ifndef KILN_CLI_TRAIN_METRICS_H
#define KILN_CLI_TRAIN_METRICS_H

#include "kiln/train.h"

typedef struct train_metrics train_metrics;

/* Serves /metrics on host:port (port 0: any free port) from one I/O thread. */
kiln_status train_metrics_start(const char *host, int port, train_metrics **out);
int train_metrics_port(const train_metrics *m);
/* Records a step or an epoch's end. NULL m: nothing. */
void train_metrics_update(train_metrics *m, const kiln_train_progress *p);
/* Stops serving (requests in flight are answered first) and frees everything. NULL ok. */
void train_metrics_stop(train_metrics *m);

#endif
