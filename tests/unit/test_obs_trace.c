/* Tests of tracing (src/obs/trace.c, src/obs/otlp.c): W3C traceparent / tracestate parsing and
 * formatting against the spec's examples and rules, the sampling decision, span attributes, the
 * OTLP JSON encoding read back by Python's json module, the collector URL, and the export queue's
 * drops and failures. */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdint.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "kiln/obs.h"
#include "test.h"

#define PYTHON "/usr/bin/python3"

/* The spec's example (W3C Trace Context, section 3.2.2.5 and onward). */
#define EXAMPLE "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"

static const uint8_t example_trace[16] = {0x4b, 0xf9, 0x2f, 0x35, 0x77, 0xb3, 0x4d, 0xa6,
                                          0xa3, 0xce, 0x92, 0x9d, 0x0e, 0x0e, 0x47, 0x36};
static const uint8_t example_span[8] = {0x00, 0xf0, 0x67, 0xaa, 0x0b, 0xa9, 0x02, 0xb7};

static void test_traceparent_valid(void) {
  kiln_trace_context c;
  const char *why = NULL;
  CHECK(kiln_traceparent_parse(EXAMPLE, &c, &why) == 0);
  CHECK(memcmp(c.trace_id, example_trace, 16) == 0);
  CHECK(memcmp(c.span_id, example_span, 8) == 0);
  CHECK(c.flags == 0x01);
  char out[KILN_TRACEPARENT_SIZE];
  kiln_traceparent_format(&c, out);
  CHECK(strcmp(out, EXAMPLE) == 0);

  CHECK(kiln_traceparent_parse("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00", &c, NULL) == 0);
  CHECK(c.flags == 0);
  /* unknown flag bits are parsed (the caller decides what to keep) */
  CHECK(kiln_traceparent_parse("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-09", &c, NULL) == 0);
  CHECK(c.flags == 0x09);
}

static void test_traceparent_future_version(void) {
  kiln_trace_context c;
  const char *why = NULL;
  /* a higher version: the first four fields parse as version 00's, more may follow after a '-' */
  CHECK(kiln_traceparent_parse("cc-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", &c, &why) == 0);
  CHECK(memcmp(c.trace_id, example_trace, 16) == 0 && c.flags == 1);
  CHECK(kiln_traceparent_parse("01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-what-the-future-holds", &c,
                               &why) == 0);
  CHECK(memcmp(c.span_id, example_span, 8) == 0);
  CHECK(kiln_traceparent_parse("cc-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01.future", &c, &why) == -1);
  CHECK(why && strstr(why, "continue with '-'"));
  /* the one version number that is never valid */
  CHECK(kiln_traceparent_parse("ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", &c, &why) == -1);
  CHECK(why && strstr(why, "version ff"));
}

static void expect_invalid(const char *text, const char *reason) {
  kiln_trace_context c;
  memset(&c, 0x5a, sizeof c);
  const char *why = NULL;
  int rc = kiln_traceparent_parse(text, &c, &why);
  CHECK(rc == -1);
  CHECK(c.flags == 0x5a); /* untouched on failure */
  CHECK(why && strstr(why, reason));
  if (rc != -1 || !why || !strstr(why, reason))
    fprintf(stderr, "traceparent '%s': got %d '%s', expected a reason containing '%s'\n", text ? text : "(null)", rc,
            why ? why : "", reason);
}

static void test_traceparent_invalid(void) {
  expect_invalid(NULL, "no traceparent");
  expect_invalid("", "shorter than the 55");
  expect_invalid("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0", "shorter than the 55");
  /* upper-case hex anywhere */
  expect_invalid("00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01", "trace-id must be 32 lower-case hex");
  expect_invalid("00-4bf92f3577b34da6a3ce929d0e0e4736-00F067AA0BA902B7-01", "parent-id must be 16 lower-case hex");
  expect_invalid("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0A", "flags must be 2 lower-case hex");
  expect_invalid("0A-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", "version must be 2 lower-case hex");
  /* all-zero ids */
  expect_invalid("00-00000000000000000000000000000000-00f067aa0ba902b7-01", "trace-id is all zeros");
  expect_invalid("00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01", "parent-id is all zeros");
  /* separators, lengths, non-hex */
  expect_invalid("00_4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", "version must be");
  expect_invalid("00-4bf92f3577b34da6a3ce929d0e0e4736_00f067aa0ba902b7-01", "trace-id must be");
  expect_invalid("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7_01", "parent-id must be");
  expect_invalid("00-4bf92f3577b34da6a3ce929d0e0e473g-00f067aa0ba902b7-01", "trace-id must be");
  expect_invalid("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902bz-01", "parent-id must be");
  expect_invalid("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0x", "flags must be");
  expect_invalid(EXAMPLE "-extra", "exactly 55");
  expect_invalid(EXAMPLE " ", "exactly 55");
  expect_invalid(" " EXAMPLE, "version must be");
  expect_invalid("00-4bf92f3577b34da6a3ce929d0e0e47366-00f067aa0ba902b7-01", "exactly 55"); /* 33 digits */
}

static void test_tracestate(void) {
  const char *why = NULL;
  CHECK(kiln_tracestate_check("rojo=00f067aa0ba902b7,congo=t61rcWkgMzE", &why) == 0);
  CHECK(kiln_tracestate_check("rojo=00f067aa0ba902b7 , \tcongo=t61rcWkgMzE", &why) == 0); /* OWS around members */
  CHECK(kiln_tracestate_check("", &why) == 0);
  CHECK(kiln_tracestate_check(",,a=1, ,", &why) == 0); /* empty members are allowed */
  CHECK(kiln_tracestate_check("fw529a3039@dt=abc,1tenant@sys-id=x y", &why) == 0); /* multi-tenant keys; inner space */
  CHECK(kiln_tracestate_check("a_-*/1=!\"#$%&'()*+-./:;<>?@[]^_`{|}~", &why) == 0); /* every allowed value character */

  struct {
    const char *text, *reason;
  } bad[] = {
      {"rojo", "no '='"},
      {"Rojo=1", "not a valid W3C key"},
      {"1rojo=1", "not a valid W3C key"}, /* a simple key starts with a letter */
      {"ro jo=1", "not a valid W3C key"},
      {"@sys=1", "not a valid W3C key"},
      {"t@=1", "not a valid W3C key"},
      {"t@Sys=1", "not a valid W3C key"},
      {"t@systemidtoolong=1", "not a valid W3C key"}, /* system-id: at most 14 characters */
      {"rojo=", "not a valid W3C value"},
      {"rojo=a=b", "not a valid W3C value"},
      {"rojo=\x7f", "not a valid W3C value"},
      {"rojo=1,congo=2,rojo=3", "appears twice"},
  };
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    why = NULL;
    int rc = kiln_tracestate_check(bad[i].text, &why);
    CHECK(rc == -1);
    CHECK(why && strstr(why, bad[i].reason));
    if (rc != -1 || !why || !strstr(why, bad[i].reason))
      fprintf(stderr, "tracestate '%s': got %d '%s', expected '%s'\n", bad[i].text, rc, why ? why : "", bad[i].reason);
  }
  /* spaces before a comma are OWS, not part of the value */
  CHECK(kiln_tracestate_check("rojo=abc  ,congo=1", &why) == 0);

  /* 32 members pass, 33 do not */
  char list[1024] = "";
  for (int i = 0; i < 33; i++) {
    char m[16];
    snprintf(m, sizeof m, "%sk%d=v", i ? "," : "", i);
    strcat(list, m);
    if (i == 31) CHECK(kiln_tracestate_check(list, &why) == 0);
  }
  CHECK(strlen(list) <= 512);
  CHECK(kiln_tracestate_check(list, &why) == -1);
  CHECK(why && strstr(why, "more than 32 list members"));

  /* 512 characters pass, 513 do not */
  char longest[600];
  memset(longest, 0, sizeof longest);
  strcpy(longest, "a=");
  memset(longest + 2, 'x', 254);
  strcat(longest, ",b=");
  memset(longest + strlen(longest), 'y', 512 - strlen(longest));
  CHECK(strlen(longest) == 512);
  CHECK(kiln_tracestate_check(longest, &why) == 0);
  strcat(longest, "y");
  CHECK(kiln_tracestate_check(longest, &why) == -1);
  CHECK(why && strstr(why, "longer than 512"));
  /* a value of 257 characters is too long on its own */
  char big[300] = "a=";
  memset(big + 2, 'v', 257);
  big[259] = '\0';
  CHECK(kiln_tracestate_check(big, &why) == -1);
}

static void set_tail(uint8_t id[16], uint64_t r) { /* the last 7 bytes, big-endian */
  for (int i = 15; i >= 9; i--, r >>= 8) id[i] = (uint8_t)(r & 0xff);
}

static void test_sampling(void) {
  uint8_t id[16];
  memset(id, 0xab, sizeof id);
  /* OpenTelemetry's rule: kept when the 56 random bits are >= (1 - ratio) * 2^56 */
  set_tail(id, 0x7fffffffffffffull);
  CHECK(!kiln_trace_sampled(id, 0.5));
  set_tail(id, 0x80000000000000ull);
  CHECK(kiln_trace_sampled(id, 0.5));
  set_tail(id, 0xc0000000000000ull - 1);
  CHECK(!kiln_trace_sampled(id, 0.25));
  set_tail(id, 0xc0000000000000ull);
  CHECK(kiln_trace_sampled(id, 0.25));
  /* the trace id's first 9 bytes play no part */
  memset(id, 0, 9);
  CHECK(kiln_trace_sampled(id, 0.25));
  set_tail(id, 0xffffffffffffffull);
  CHECK(kiln_trace_sampled(id, 1e-9));
  CHECK(!kiln_trace_sampled(id, 0));
  set_tail(id, 0);
  CHECK(kiln_trace_sampled(id, 1));
  CHECK(!kiln_trace_sampled(id, 0.999));
  CHECK(!kiln_trace_sampled(id, NAN));
  CHECK(!kiln_trace_sampled(id, -1));

  /* random ids sampled at 0.3: about 30 %, and the same decision every time for the same id */
  int kept = 0, n = 20000;
  for (int i = 0; i < n; i++) {
    kiln_trace_random_id(id, 16);
    int a = kiln_trace_sampled(id, 0.3);
    CHECK(a == kiln_trace_sampled(id, 0.3));
    kept += a;
  }
  CHECK_NEAR((double)kept / n, 0.3, 0.02);
}

/* Ids from several threads: never zero, no duplicates among many. */
#define ID_THREADS 4
#define IDS_PER_THREAD 2000
static uint8_t thread_ids[ID_THREADS][IDS_PER_THREAD][8];

static void *make_ids(void *arg) {
  uint8_t(*ids)[8] = arg;
  for (int i = 0; i < IDS_PER_THREAD; i++) kiln_trace_random_id(ids[i], 8);
  return NULL;
}

static int compare_ids(const void *a, const void *b) { return memcmp(a, b, 8); }

static void test_random_ids(void) {
  pthread_t t[ID_THREADS];
  for (int i = 0; i < ID_THREADS; i++) CHECK(pthread_create(&t[i], NULL, make_ids, thread_ids[i]) == 0);
  for (int i = 0; i < ID_THREADS; i++) pthread_join(t[i], NULL);
  uint8_t(*all)[8] = &thread_ids[0][0];
  size_t n = ID_THREADS * IDS_PER_THREAD;
  static const uint8_t zero[8];
  for (size_t i = 0; i < n; i++) CHECK(memcmp(all[i], zero, 8) != 0);
  qsort(all, n, 8, compare_ids);
  int duplicates = 0;
  for (size_t i = 1; i < n; i++) duplicates += memcmp(all[i - 1], all[i], 8) == 0;
  CHECK(duplicates == 0);
  /* a 3-byte id (not a multiple of 8) is filled too */
  uint8_t small[3] = {0};
  kiln_trace_random_id(small, 3);
  CHECK(small[0] || small[1] || small[2]);
}

static void test_span_attributes(void) {
  kiln_span s;
  uint8_t parent[8] = {0};
  kiln_span_init(&s, example_trace, example_span, parent, "a name longer than thirty-one bytes for sure", KILN_SPAN_INTERNAL);
  CHECK(strlen(s.name) == 31);
  CHECK(kiln_span_set_string(&s, "k", "caf\xc3\xa9") == 0);
  CHECK(strcmp(s.text + s.attributes[0].value, "caf\xc3\xa9") == 0); /* valid UTF-8 kept */
  CHECK(kiln_span_set_string(&s, "bad", "a\xff\xfe z") == 0);
  CHECK(strcmp(s.text + s.attributes[1].value, "a?? z") == 0);
  CHECK(kiln_span_set_int(&s, "n", -42) == 0);
  CHECK(s.attributes[2].is_int && s.attributes[2].int_value == -42);
  /* a value too long for the room left is cut at a character boundary: fill with 2-byte characters */
  char longv[1200];
  for (int i = 0; i < 599; i++) memcpy(longv + 2 * i, "\xc3\xa9", 2);
  longv[1198] = '\0';
  CHECK(kiln_span_set_string(&s, "long", longv) == 0);
  const char *v = s.text + s.attributes[3].value;
  CHECK(strlen(v) % 2 == 0 && strlen(v) > 100);
  CHECK(s.text_len <= sizeof s.text);
  /* no room left: refused, nothing half-written */
  int n = s.n_attributes;
  CHECK(kiln_span_set_string(&s, "more", "x") == -1);
  CHECK(s.n_attributes == n);
  /* at most KILN_SPAN_MAX_ATTRIBUTES */
  kiln_span_init(&s, example_trace, example_span, NULL, "x", KILN_SPAN_SERVER);
  for (int i = 0; i < KILN_SPAN_MAX_ATTRIBUTES; i++) CHECK(kiln_span_set_int(&s, "i", i) == 0);
  CHECK(kiln_span_set_int(&s, "i", 99) == -1);
  kiln_span_set_status(&s, KILN_SPAN_ERROR, "bad \xff");
  CHECK(s.status == KILN_SPAN_ERROR && strcmp(s.status_message, "bad ?") == 0);
}

/* ---------------------------------------------------------------- OTLP JSON, read by Python */

/* Checks the encoding with json.loads against the OTLP JSON mapping: field names in lowerCamelCase,
 * ids as lower-case hex (not base64), 64-bit integers as decimal strings, enums as numbers. */
static const char check_script[] =
    "import json, re, sys\n"
    "doc = json.loads(open(sys.argv[1], encoding='utf-8').read())\n"
    "def kv(attrs): return {a['key']: a['value'] for a in attrs}\n"
    "assert list(doc) == ['resourceSpans'], list(doc)\n"
    "rs = doc['resourceSpans']; assert len(rs) == 1\n"
    "res = kv(rs[0]['resource']['attributes'])\n"
    "assert res['service.name'] == {'stringValue': 'kiln'}, res\n"
    "assert res['service.version'] == {'stringValue': '9.8.7'}, res\n"
    "ss = rs[0]['scopeSpans']; assert len(ss) == 1 and ss[0]['scope']['name'] == 'kiln', ss\n"
    "spans = ss[0]['spans']; assert len(spans) == 2, len(spans)\n"
    "a, b = spans\n"
    "assert a['traceId'] == '4bf92f3577b34da6a3ce929d0e0e4736' and b['traceId'] == a['traceId'], a\n"
    "assert a['spanId'] == '00f067aa0ba902b7', a['spanId']\n"
    "assert 'parentSpanId' not in a, a\n"
    "assert b['parentSpanId'] == '00f067aa0ba902b7' and b['spanId'] == '0102030405060708', b\n"
    "for s in spans:\n"
    "  for f in ('traceId', 'spanId', 'parentSpanId'):\n"
    "    if f in s: assert re.fullmatch('[0-9a-f]+', s[f]) and len(s[f]) == (32 if f == 'traceId' else 16), s[f]\n"
    "  for f in ('startTimeUnixNano', 'endTimeUnixNano'): assert isinstance(s[f], str) and s[f].isdigit(), s[f]\n"
    "assert a['name'] == 'receive' and a['kind'] == 2 and b['name'] == 'inference' and b['kind'] == 1\n"
    "assert int(a['startTimeUnixNano']) == 1700000000123456789 and int(a['endTimeUnixNano']) == 1700000000223456789\n"
    "attrs = kv(a['attributes'])\n"
    "assert attrs['http.method'] == {'stringValue': 'POST'}, attrs\n"
    "assert attrs['http.status_code'] == {'intValue': '200'}, attrs\n"
    "assert attrs['big'] == {'intValue': '-9223372036854775808'}, attrs\n"
    "assert attrs['quoted'] == {'stringValue': 'say \"hi\"\\n\\\\ \\u00e9 \\x01'}, attrs\n"
    "assert attrs['latin1'] == {'stringValue': 'caf?'}, attrs\n"
    "assert a['status'] == {'code': 1}, a['status']\n"
    "assert b['status'] == {'code': 2, 'message': 'model run failed: \"x\"'}, b['status']\n"
    "assert b['attributes'] == [], b['attributes']\n";

static int run_python(const char *script, const char *arg) {
  char dir[] = "/tmp/kiln_trace_XXXXXX";
  if (!mkdtemp(dir)) return -1;
  char path[64];
  snprintf(path, sizeof path, "%s/check.py", dir);
  FILE *f = fopen(path, "w");
  if (!f) return -1;
  fputs(script, f);
  fclose(f);
  char cmd[256];
  snprintf(cmd, sizeof cmd, PYTHON " %s %s", path, arg);
  int rc = system(cmd);
  unlink(path);
  rmdir(dir);
  return rc;
}

static void test_otlp_json(void) {
  kiln_span spans[2];
  kiln_span_init(&spans[0], example_trace, example_span, NULL, "receive", KILN_SPAN_SERVER);
  spans[0].start_ns = 1700000000123456789;
  spans[0].end_ns = 1700000000223456789;
  kiln_span_set_string(&spans[0], "http.method", "POST");
  kiln_span_set_int(&spans[0], "http.status_code", 200);
  kiln_span_set_int(&spans[0], "big", INT64_MIN);
  kiln_span_set_string(&spans[0], "quoted", "say \"hi\"\n\\ \xc3\xa9 \x01");
  kiln_span_set_string(&spans[0], "latin1", "caf\xe9");
  kiln_span_set_status(&spans[0], KILN_SPAN_OK, NULL);
  const uint8_t id[8] = {1, 2, 3, 4, 5, 6, 7, 8};
  kiln_span_init(&spans[1], example_trace, id, example_span, "inference", KILN_SPAN_INTERNAL);
  spans[1].start_ns = 1700000000133456789;
  spans[1].end_ns = 1700000000213456789;
  kiln_span_set_status(&spans[1], KILN_SPAN_ERROR, "model run failed: \"x\"");

  char *json = NULL;
  size_t len = 0;
  CHECK_OK(kiln_otlp_encode(spans, 2, "kiln", "9.8.7", &json, &len));
  if (!json) return;
  CHECK(strlen(json) == len);
  char path[] = "/tmp/kiln_otlp_XXXXXX";
  int fd = mkstemp(path);
  CHECK(fd >= 0);
  if (fd >= 0) {
    CHECK(write(fd, json, len) == (ssize_t)len);
    close(fd);
    int rc = run_python(check_script, path);
    CHECK(rc == 0);
    if (rc != 0) fprintf(stderr, "the OTLP JSON the check rejected:\n%s\n", json);
    unlink(path);
  }
  free(json);

  /* no spans: still a well-formed request; a negative count is refused */
  CHECK_OK(kiln_otlp_encode(NULL, 0, NULL, NULL, &json, &len));
  CHECK(json && strstr(json, "\"spans\":[]") && strstr(json, "\"service.name\",\"value\":{\"stringValue\":\"kiln\"}"));
  free(json);
  CHECK_ERROR(kiln_otlp_encode(spans, -1, NULL, NULL, &json, &len), KILN_INVALID_ARGUMENT, "-1 spans");
}

static void test_otlp_url(void) {
  char url[256];
  CHECK_OK(kiln_otlp_url("http://127.0.0.1:4318", url, sizeof url));
  CHECK(strcmp(url, "http://127.0.0.1:4318/v1/traces") == 0);
  CHECK_OK(kiln_otlp_url("http://jaeger:4318/", url, sizeof url));
  CHECK(strcmp(url, "http://jaeger:4318/v1/traces") == 0);
  CHECK_OK(kiln_otlp_url("https://collector.example/otlp/v1/traces", url, sizeof url));
  CHECK(strcmp(url, "https://collector.example/otlp/v1/traces") == 0);
  CHECK_OK(kiln_otlp_url("http://[::1]:4318", url, sizeof url));
  CHECK(strcmp(url, "http://[::1]:4318/v1/traces") == 0);
  CHECK_ERROR(kiln_otlp_url("ftp://x:21", url, sizeof url), KILN_INVALID_ARGUMENT, "expected an http:// or https:// URL");
  CHECK_ERROR(kiln_otlp_url("127.0.0.1:4318", url, sizeof url), KILN_INVALID_ARGUMENT, "expected an http:// or https:// URL");
  CHECK_ERROR(kiln_otlp_url(NULL, url, sizeof url), KILN_INVALID_ARGUMENT, "got nothing");
  CHECK_ERROR(kiln_otlp_url("http://", url, sizeof url), KILN_INVALID_ARGUMENT, "expected a host");
  CHECK_ERROR(kiln_otlp_url("http://:4318", url, sizeof url), KILN_INVALID_ARGUMENT, "expected a host");
  CHECK_ERROR(kiln_otlp_url("http://a b:1", url, sizeof url), KILN_INVALID_ARGUMENT, "no spaces");
  CHECK_ERROR(kiln_otlp_url("http://h:1?x=1", url, sizeof url), KILN_INVALID_ARGUMENT, "path before a query");
  CHECK_ERROR(kiln_otlp_url("http://h:1", url, 12), KILN_INVALID_ARGUMENT, "too long");
}

/* ---------------------------------------------------------------- the export queue */

static void fill_span(kiln_span *s) {
  uint8_t id[8];
  kiln_trace_random_id(id, 8);
  kiln_span_init(s, example_trace, id, example_span, "queue", KILN_SPAN_INTERNAL);
  s->start_ns = kiln_trace_now_ns();
  s->end_ns = s->start_ns + 1000;
}

/* A port on 127.0.0.1 that nothing listens on (bound, never listened, so no one else takes it). */
static int dead_port(int *fd_out) {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
  socklen_t n = sizeof a;
  if (fd < 0 || bind(fd, (struct sockaddr *)&a, sizeof a) != 0 || getsockname(fd, (struct sockaddr *)&a, &n) != 0) return -1;
  *fd_out = fd;
  return ntohs(a.sin_port);
}

static double mono(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

static void test_queue_overflow(void) {
  int fd = -1, port = dead_port(&fd);
  CHECK(port > 0);
  char endpoint[64];
  snprintf(endpoint, sizeof endpoint, "http://127.0.0.1:%d", port);
  kiln_metrics *m = NULL;
  CHECK_OK(kiln_metrics_create(&m));
  kiln_tracer *t = NULL;
  kiln_tracer_options o = {.endpoint = endpoint, .max_queue_spans = 4, .metrics = m, .synchronous = 1};
  CHECK_OK(kiln_tracer_create(&o, &t));
  if (!t) return;
  kiln_span s;
  int accepted = 0;
  for (int i = 0; i < 10; i++) {
    fill_span(&s);
    accepted += kiln_tracer_submit(t, &s) == 0;
  }
  CHECK(accepted == 4);
  kiln_tracer_stats st;
  kiln_tracer_stats_get(t, &st);
  CHECK(st.queued == 4 && st.dropped == 6 && st.exported == 0 && st.failures == 0);
  kiln_metric *dropped = kiln_metrics_counter(m, "kiln_trace_spans_dropped_total", "x", 0, NULL);
  CHECK(kiln_metric_value(dropped, NULL) == 6);

  /* the collector is unreachable: the POST fails quickly, its spans are lost and counted */
  double t0 = mono();
  CHECK_ERROR(kiln_tracer_flush(t, 2), KILN_UNAVAILABLE, "1 POSTs failed");
  CHECK(mono() - t0 < 2.5);
  kiln_tracer_stats_get(t, &st);
  CHECK(st.queued == 0 && st.dropped == 10 && st.failures == 1 && st.exported == 0);
  kiln_metric *failures = kiln_metrics_counter(m, "kiln_trace_export_failures_total", "x", 0, NULL);
  CHECK(kiln_metric_value(failures, NULL) == 1);
  CHECK(kiln_metric_value(dropped, NULL) == 10);

  /* the queue takes spans again once drained */
  fill_span(&s);
  CHECK(kiln_tracer_submit(t, &s) == 0);
  kiln_tracer_free(t);
  kiln_metrics_free(m);
  close(fd);

  /* a bad endpoint is refused at creation */
  o.endpoint = "localhost:4318";
  t = NULL;
  CHECK_ERROR(kiln_tracer_create(&o, &t), KILN_INVALID_ARGUMENT, "expected an http:// or https:// URL");
  CHECK(t == NULL);
}

/* The background thread against a dead collector: submitting never waits on the network, and
 * freeing returns within the bound. */
static void test_background_dead_collector(void) {
  int fd = -1, port = dead_port(&fd);
  char endpoint[64];
  snprintf(endpoint, sizeof endpoint, "http://127.0.0.1:%d/v1/traces", port);
  kiln_tracer *t = NULL;
  kiln_tracer_options o = {.endpoint = endpoint, .max_queue_spans = 64, .max_batch_spans = 8, .flush_interval_s = 0.05};
  CHECK_OK(kiln_tracer_create(&o, &t));
  if (!t) return;
  kiln_span s;
  fill_span(&s);
  double worst = 0;
  for (int i = 0; i < 2000; i++) {
    double t0 = mono();
    kiln_tracer_submit(t, &s);
    double took = mono() - t0;
    if (took > worst) worst = took;
  }
  CHECK(worst < 0.1); /* a lock held for a copy, never for a POST */
  kiln_tracer_stats st;
  kiln_tracer_stats_get(t, &st);
  CHECK(st.exported == 0);
  double t0 = mono();
  kiln_tracer_free(t);
  CHECK(mono() - t0 < 3.5);
  close(fd);
}

TEST_MAIN(TEST(test_traceparent_valid), TEST(test_traceparent_future_version), TEST(test_traceparent_invalid),
          TEST(test_tracestate), TEST(test_sampling), TEST(test_random_ids), TEST(test_span_attributes),
          TEST(test_otlp_json), TEST(test_otlp_url), TEST(test_queue_overflow), TEST(test_background_dead_collector))
