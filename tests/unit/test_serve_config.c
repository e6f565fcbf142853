/* TF Serving's configuration files: ModelServerConfig and BatchingParameters in protobuf text
 * format (src/serve/config.c, src/serve/textproto.c). */
#include "kiln/serve.h"
#include "test.h"

static kiln_status parse_models(const char *text, kiln_model_server_config *c) {
  return kiln_model_server_config_parse(text, strlen(text), "models.config", c);
}

static kiln_status parse_batching(const char *text, kiln_batching_config *c) {
  return kiln_batching_config_parse(text, strlen(text), "batching.config", c);
}

/* The config must be rejected with a message containing `text`, and the output left zeroed. */
#define MODELS_ERROR(config, code, text)                                          \
  do {                                                                            \
    kiln_model_server_config c_;                                                  \
    memset(&c_, 0xab, sizeof c_);                                                 \
    CHECK_ERROR(parse_models(config, &c_), code, text);                           \
    CHECK(c_.models == NULL && c_.n_models == 0);                                 \
  } while (0)

#define BATCHING_ERROR(config, text)                                              \
  do {                                                                            \
    kiln_batching_config b_;                                                      \
    memset(&b_, 0xab, sizeof b_);                                                 \
    CHECK_ERROR(parse_batching(config, &b_), KILN_INVALID_ARGUMENT, text);        \
    CHECK(b_.allowed_batch_sizes == NULL && b_.max_batch_size == 0);              \
  } while (0)

/* A model config around the given model body, for the validation tests. */
#define ONE_MODEL(body) "model_config_list { config { " body " } }"

static const kiln_model_config *find_model(const kiln_model_server_config *c, const char *name) {
  for (int i = 0; i < c->n_models; i++)
    if (strcmp(c->models[i].name, name) == 0) return &c->models[i];
  return NULL;
}

/* TF Serving's documented example: several models, each version policy, labels. */
static void test_docs_example(void) {
  const char *text =
      "model_config_list {\n"
      "  config {\n"
      "    name: 'my_model'\n"
      "    base_path: '/models/my_model'\n"
      "    model_platform: 'tensorflow'\n"
      "    model_version_policy { specific { versions: 42 versions: 43 } }\n"
      "    version_labels { key: 'stable' value: 42 }\n"
      "    version_labels { key: 'canary' value: 43 }\n"
      "  }\n"
      "  config {\n"
      "    name: 'latest_model'\n"
      "    base_path: '/models/latest'\n"
      "    model_platform: 'onnx'\n"
      "    model_version_policy { latest { num_versions: 2 } }\n"
      "  }\n"
      "  config {\n"
      "    name: 'all_model'\n"
      "    base_path: '/models/all'\n"
      "    model_version_policy { all {} }\n"
      "  }\n"
      "}\n";
  kiln_model_server_config c;
  CHECK_OK(parse_models(text, &c));
  CHECK(c.n_models == 3);
  if (c.n_models != 3) {
    kiln_model_server_config_free(&c);
    return;
  }
  const kiln_model_config *m = &c.models[0];
  CHECK(strcmp(m->name, "my_model") == 0);
  CHECK(strcmp(m->base_path, "/models/my_model") == 0);
  CHECK(strcmp(m->platform, "tensorflow") == 0);
  CHECK(m->policy == KILN_POLICY_SPECIFIC);
  CHECK(m->n_versions == 2 && m->versions[0] == 42 && m->versions[1] == 43);
  CHECK(m->n_labels == 2);
  CHECK(m->n_labels == 2 && strcmp(m->labels[0].label, "stable") == 0 && m->labels[0].version == 42);
  CHECK(m->n_labels == 2 && strcmp(m->labels[1].label, "canary") == 0 && m->labels[1].version == 43);
  m = &c.models[1];
  CHECK(strcmp(m->name, "latest_model") == 0 && strcmp(m->platform, "onnx") == 0);
  CHECK(m->policy == KILN_POLICY_LATEST && m->latest_num_versions == 2);
  CHECK(m->n_versions == 0 && m->versions == NULL && m->n_labels == 0 && m->labels == NULL);
  m = &c.models[2];
  CHECK(strcmp(m->name, "all_model") == 0 && strcmp(m->platform, "") == 0);
  CHECK(m->policy == KILN_POLICY_ALL);
  kiln_model_server_config_free(&c);
  CHECK(c.models == NULL && c.n_models == 0);
}

/* No policy, an empty policy and an empty latest {} all mean TF Serving's default: the newest
 * version. */
static void test_default_policy(void) {
  const char *text = "model_config_list {"
                     " config { name: 'a' base_path: '/a' }"
                     " config { name: 'b' base_path: '/b' model_version_policy {} }"
                     " config { name: 'c' base_path: '/c' model_version_policy { latest {} } }"
                     "}";
  kiln_model_server_config c;
  CHECK_OK(parse_models(text, &c));
  CHECK(c.n_models == 3);
  for (int i = 0; i < c.n_models; i++) {
    CHECK(c.models[i].policy == KILN_POLICY_LATEST);
    CHECK(c.models[i].latest_num_versions == 1);
    CHECK(c.models[i].platform && c.models[i].platform[0] == '\0');
  }
  kiln_model_server_config_free(&c);
}

/* `config {` and `config: {`, <> as delimiters, and , or ; after fields read the same. */
static void test_separators(void) {
  const char *texts[] = {
      "model_config_list { config { name: 'm' base_path: '/p' model_version_policy { specific { versions: 7 } } } }",
      "model_config_list: { config: { name: 'm', base_path: '/p'; model_version_policy: { specific: { versions: 7, } } } }",
      "model_config_list < config < name: \"m\" base_path: \"/p\" model_version_policy < specific < versions: 7 > > > >",
      "model_config_list{config{name:'m';base_path:'/p';model_version_policy{specific{versions:7;};};};}",
  };
  for (size_t i = 0; i < sizeof texts / sizeof texts[0]; i++) {
    kiln_model_server_config c;
    CHECK_OK(parse_models(texts[i], &c));
    CHECK(c.n_models == 1);
    if (c.n_models == 1) {
      CHECK(strcmp(c.models[0].name, "m") == 0 && strcmp(c.models[0].base_path, "/p") == 0);
      CHECK(c.models[0].policy == KILN_POLICY_SPECIFIC && c.models[0].n_versions == 1 && c.models[0].versions[0] == 7);
    }
    kiln_model_server_config_free(&c);
  }
  /* a delimiter must be closed by its own kind */
  MODELS_ERROR("model_config_list < config { name: 'm' base_path: '/p' } }", KILN_INVALID_ARGUMENT,
               "models.config:1:58: expected '>' to close 'model_config_list' opened at 1:19, got '}'");
}

static void test_comments(void) {
  const char *text = "# the models kiln serves\n"
                     "model_config_list {  # one list\n"
                     "  config {\n"
                     "    # name comes first\n"
                     "    name: 'a#b'  # a '#' in a string is no comment\n"
                     "    base_path: \"/models/a\"\n"
                     "  }\n"
                     "}\n"
                     "# trailing comment without a newline";
  kiln_model_server_config c;
  CHECK_OK(parse_models(text, &c));
  CHECK(c.n_models == 1 && strcmp(c.models[0].name, "a#b") == 0);
  kiln_model_server_config_free(&c);
}

static void test_strings(void) {
  const char *text = "model_config_list { config {\n"
                     "  name: 'it\\'s \"q\" \\\\ \\x41\\101\\t\\n'\n"
                     "  base_path: '/models/' \"joined\" '/' 'path'\n"
                     "  model_platform: \"say \\\"hi\\\"\"\n"
                     "} }";
  kiln_model_server_config c;
  CHECK_OK(parse_models(text, &c));
  CHECK(c.n_models == 1);
  if (c.n_models == 1) {
    CHECK(strcmp(c.models[0].name, "it's \"q\" \\ AA\t\n") == 0);
    CHECK(strcmp(c.models[0].base_path, "/models/joined/path") == 0);
    CHECK(strcmp(c.models[0].platform, "say \"hi\"") == 0);
  }
  kiln_model_server_config_free(&c);
  MODELS_ERROR(ONE_MODEL("name: 'a\\qb' base_path: '/p'"), KILN_INVALID_ARGUMENT,
               "models.config:1:38: unknown escape sequence");
  MODELS_ERROR(ONE_MODEL("name: '\\x' base_path: '/p'"), KILN_INVALID_ARGUMENT, "\\x must be followed by");
  MODELS_ERROR(ONE_MODEL("name: '\\777' base_path: '/p'"), KILN_INVALID_ARGUMENT, "octal escape above \\377");
  MODELS_ERROR(ONE_MODEL("name: 'a\\000b' base_path: '/p'"), KILN_INVALID_ARGUMENT,
               "field 'name' of ModelConfig holds a NUL byte");
  MODELS_ERROR("model_config_list { config { name: 'abc\n' base_path: '/p' } }", KILN_INVALID_ARGUMENT,
               "models.config:1:36: string not closed on its line");
  MODELS_ERROR("model_config_list { config { name: 'abc", KILN_INVALID_ARGUMENT,
               "models.config:1:36: string not closed: the input ends inside it");
  MODELS_ERROR(ONE_MODEL("name: my_model base_path: '/p'"), KILN_INVALID_ARGUMENT,
               "models.config:1:36: field 'name' of ModelConfig takes a string, got my_model (strings are quoted)");
  MODELS_ERROR(ONE_MODEL("name: 5 base_path: '/p'"), KILN_INVALID_ARGUMENT,
               "field 'name' of ModelConfig takes a string, got an integer");
}

/* Repeated fields also as lists: scalars after a ':' and messages with or without it. */
static void test_lists(void) {
  const char *text = "model_config_list { config: [\n"
                     "  { name: 'a' base_path: '/a' model_version_policy { specific { versions: [1, 2] versions: 3 versions: [] } } },\n"
                     "  { name: 'b' base_path: '/b' version_labels [{ key: 'x' value: 1 }, { key: 'y' value: 2 }] }\n"
                     "] }";
  kiln_model_server_config c;
  CHECK_OK(parse_models(text, &c));
  CHECK(c.n_models == 2);
  if (c.n_models == 2) {
    const kiln_model_config *a = find_model(&c, "a"), *b = find_model(&c, "b");
    CHECK(a && a->n_versions == 3 && a->versions[0] == 1 && a->versions[1] == 2 && a->versions[2] == 3);
    CHECK(b && b->n_labels == 2 && strcmp(b->labels[1].label, "y") == 0 && b->labels[1].version == 2);
  }
  kiln_model_server_config_free(&c);
  MODELS_ERROR(ONE_MODEL("name: ['a'] base_path: '/p'"), KILN_INVALID_ARGUMENT,
               "field 'name' of ModelConfig takes one value, not a list");
  MODELS_ERROR(ONE_MODEL("name: 'a' base_path: '/p' model_version_policy { specific { versions: [1 2] } }"),
               KILN_INVALID_ARGUMENT, "expected ',' or ']' in the list of 'versions', got '2'");
  MODELS_ERROR(ONE_MODEL("name: 'a' base_path: '/p' model_version_policy { specific { versions [1] } }"),
               KILN_INVALID_ARGUMENT, "expected ':' or '{' after 'versions', got '1'");
}

static void test_integers(void) {
  kiln_model_server_config c;
  CHECK_OK(parse_models(ONE_MODEL("name: 'a' base_path: '/p' model_version_policy { specific { versions: 0x2A versions: -0 } }"), &c));
  CHECK(c.n_models == 1 && c.models[0].n_versions == 2 && c.models[0].versions[0] == 42 && c.models[0].versions[1] == 0);
  kiln_model_server_config_free(&c);
  CHECK_OK(parse_models(ONE_MODEL("name: 'a' base_path: '/p' model_version_policy { specific { versions: 9223372036854775807 } }"), &c));
  CHECK(c.n_models == 1 && c.models[0].versions[0] == INT64_MAX);
  kiln_model_server_config_free(&c);
  MODELS_ERROR(ONE_MODEL("name: 'a' base_path: '/p' model_version_policy { specific { versions: 9223372036854775808 } }"),
               KILN_INVALID_ARGUMENT, "integer '9223372036854775808' is out of range");
  MODELS_ERROR(ONE_MODEL("name: 'a' base_path: '/p' model_version_policy { specific { versions: 1.5 } }"),
               KILN_INVALID_ARGUMENT, "'1.5' is not an integer");
  MODELS_ERROR(ONE_MODEL("name: 'a' base_path: '/p' model_version_policy { specific { versions: 010 } }"),
               KILN_INVALID_ARGUMENT, "integer '010' has a leading zero: octal is not supported");
  MODELS_ERROR(ONE_MODEL("name: 'a' base_path: '/p' model_version_policy { specific { versions: 0x } }"),
               KILN_INVALID_ARGUMENT, "'0x' is not an integer");
}

/* Every check made after parsing, each with where it points. */
static void test_model_validation(void) {
  MODELS_ERROR("", KILN_INVALID_ARGUMENT, "models.config: no models");
  MODELS_ERROR("# only a comment\n", KILN_INVALID_ARGUMENT, "no models");
  MODELS_ERROR("model_config_list {}", KILN_INVALID_ARGUMENT, "models.config:1:1: model_config_list holds no models");
  MODELS_ERROR("model_config_list {\n  config { base_path: '/p' }\n}", KILN_INVALID_ARGUMENT,
               "models.config:2:3: a model config has no name");
  MODELS_ERROR(ONE_MODEL("name: '' base_path: '/p'"), KILN_INVALID_ARGUMENT, "a model config has no name");
  MODELS_ERROR(ONE_MODEL("name: 'm'"), KILN_INVALID_ARGUMENT, "models.config:1:21: model 'm' has no base_path");
  MODELS_ERROR("model_config_list {\n"
               "  config { name: 'm' base_path: '/a' }\n"
               "  config { name: 'n' base_path: '/b' }\n"
               "  config { name: 'm' base_path: '/c' }\n"
               "}",
               KILN_INVALID_ARGUMENT, "models.config:4:12: model name 'm' is used twice (first at 2:12)");
  MODELS_ERROR(ONE_MODEL("name: 'm' base_path: '/p' model_version_policy { specific { versions: 1 versions: -1 } }"),
               KILN_INVALID_ARGUMENT, "models.config:1:112: version -1 is negative: versions are >= 0");
  MODELS_ERROR(ONE_MODEL("name: 'm' base_path: '/p' model_version_policy { specific { versions: [3, 1, 3] } }"),
               KILN_INVALID_ARGUMENT, "models.config:1:107: version 3 is listed twice (first at 1:101)");
  MODELS_ERROR(ONE_MODEL("name: 'm' base_path: '/p' model_version_policy { specific {} }"), KILN_INVALID_ARGUMENT,
               "the specific version policy lists no versions");
  MODELS_ERROR(ONE_MODEL("name: 'm' base_path: '/p' model_version_policy { latest { num_versions: 0 } }"),
               KILN_INVALID_ARGUMENT, "latest.num_versions must be between 1 and 4294967295, got 0");
  MODELS_ERROR(ONE_MODEL("name: 'm' base_path: '/p' model_version_policy { latest { num_versions: -2 } }"),
               KILN_INVALID_ARGUMENT, "latest.num_versions must be between 1 and 4294967295, got -2");
  MODELS_ERROR(ONE_MODEL("name: 'm' base_path: '/p' model_version_policy { latest {} all {} }"), KILN_INVALID_ARGUMENT,
               "model_version_policy takes one of latest, all and specific: 'latest' and 'all' are both given");
  MODELS_ERROR(ONE_MODEL("name: 'm' base_path: '/p' model_version_policy { all { x: 1 } }"), KILN_INVALID_ARGUMENT,
               "unknown field 'x' in ServableVersionPolicy.All");
  MODELS_ERROR(ONE_MODEL("name: 'm' base_path: '/p'\n"
                         "version_labels { key: 'stable' value: 1 }\n"
                         "version_labels { key: 'canary' value: 2 }\n"
                         "version_labels { key: 'stable' value: 2 }"),
               KILN_INVALID_ARGUMENT, "models.config:4:18: version label 'stable' is given twice (first at 2:18)");
  MODELS_ERROR(ONE_MODEL("name: 'm' base_path: '/p' version_labels { key: 'stable' value: -1 }"), KILN_INVALID_ARGUMENT,
               "version label 'stable' points at version -1: versions are >= 0");
  MODELS_ERROR(ONE_MODEL("name: 'm' base_path: '/p' version_labels { key: 'stable' }"), KILN_INVALID_ARGUMENT,
               "version label 'stable' has no value");
  MODELS_ERROR(ONE_MODEL("name: 'm' base_path: '/p' version_labels { value: 3 }"), KILN_INVALID_ARGUMENT,
               "version_labels entry without a key");
  MODELS_ERROR(ONE_MODEL("name: 'm' base_path: '/p' name: 'n'"), KILN_INVALID_ARGUMENT,
               "models.config:1:56: field 'name' of ModelConfig is given twice (first at 1:30)");
  MODELS_ERROR("model_config_list { config { name: 'm' base_path: '/p' } }\nmodel_config_list { }",
               KILN_INVALID_ARGUMENT, "models.config:2:1: field 'model_config_list' of ModelServerConfig is given twice");
  MODELS_ERROR(ONE_MODEL("name: 'm' base_path: '/p' model_version_policy: 3"), KILN_INVALID_ARGUMENT,
               "field 'model_version_policy' of ModelConfig takes a message, got an integer");
}

/* Unknown fields name the message type; fields TF Serving has and kiln does not are refused. */
static void test_unknown_and_unsupported(void) {
  MODELS_ERROR("model_config_list {\n  config {\n    nme: 'm'\n  }\n}", KILN_INVALID_ARGUMENT,
               "models.config:3:5: unknown field 'nme' in ModelConfig");
  MODELS_ERROR("model_config_lst { }", KILN_INVALID_ARGUMENT,
               "models.config:1:1: unknown field 'model_config_lst' in ModelServerConfig");
  MODELS_ERROR("model_config_list { model { } }", KILN_INVALID_ARGUMENT, "unknown field 'model' in ModelConfigList");
  MODELS_ERROR(ONE_MODEL("name: 'm' base_path: '/p' model_version_policy { newest {} }"), KILN_INVALID_ARGUMENT,
               "unknown field 'newest' in ServableVersionPolicy");
  MODELS_ERROR(ONE_MODEL("name: 'm' base_path: '/p' version_labels { key: 'a' value: 1 version: 2 }"),
               KILN_INVALID_ARGUMENT, "unknown field 'version' in ModelConfig.VersionLabelsEntry");
  MODELS_ERROR(ONE_MODEL("name: 'm' base_path: '/p' logging_config { sampling_config { sampling_rate: 1 } }"),
               KILN_INVALID_ARGUMENT, "models.config:1:56: field 'logging_config' of ModelConfig is not supported by kiln");
  MODELS_ERROR(ONE_MODEL("name: 'm' base_path: '/p' model_type: TENSORFLOW"), KILN_INVALID_ARGUMENT,
               "field 'model_type' of ModelConfig is not supported by kiln");
  MODELS_ERROR("custom_model_config_list { [type.googleapis.com/my.Config] { x: 1 } }", KILN_INVALID_ARGUMENT,
               "models.config:1:1: field 'custom_model_config_list' of ModelServerConfig is not supported by kiln");
}

/* Broken syntax: each error says what was expected and where. */
static void test_syntax_errors(void) {
  MODELS_ERROR("model_config_list {\n  config {\n    name: 'm'\n    base_path: '/p'\n  }\n", KILN_INVALID_ARGUMENT,
               "models.config:6:1: missing '}' to close 'model_config_list' opened at 1:19");
  MODELS_ERROR("model_config_list { config { name: 'm'", KILN_INVALID_ARGUMENT,
               "missing '}' to close 'config' opened at 1:28");
  MODELS_ERROR("model_config_list { config { name: } }", KILN_INVALID_ARGUMENT,
               "models.config:1:36: expected a value for 'name', got '}'");
  MODELS_ERROR("model_config_list { config { name 'm' } }", KILN_INVALID_ARGUMENT,
               "models.config:1:35: expected ':' or '{' after 'name', got a string");
  MODELS_ERROR("}", KILN_INVALID_ARGUMENT, "models.config:1:1: '}' closes nothing: is there one too many?");
  MODELS_ERROR("model_config_list { config { name: 'm' base_path: '/p' } } }", KILN_INVALID_ARGUMENT,
               "models.config:1:60: '}' closes nothing");
  MODELS_ERROR("model_config_list {\n\tconfig { name: 'm' @ }", KILN_INVALID_ARGUMENT,
               "models.config:2:21: unexpected character '@'");
  MODELS_ERROR("model_config_list { \x01 }", KILN_INVALID_ARGUMENT, "unexpected byte 0x01 outside a string");
  MODELS_ERROR("model_config_list { config { name: -x } }", KILN_INVALID_ARGUMENT, "unexpected character '-'");
  MODELS_ERROR("[ext { }", KILN_INVALID_ARGUMENT, "expected a type name and ']' in a bracketed field name");
  /* embedded NUL bytes end nothing: the length given is what is read */
  kiln_model_server_config c;
  static const char with_nul[] = "model_config_list { config { name: 'm' base_path: '/p' } }\0 garbage";
  CHECK_ERROR(kiln_model_server_config_parse(with_nul, sizeof with_nul - 1, "models.config", &c), KILN_INVALID_ARGUMENT,
              "unexpected byte 0x00");
  CHECK_OK(kiln_model_server_config_parse(with_nul, strlen(with_nul), "models.config", &c));
  kiln_model_server_config_free(&c);
  /* a NULL name still gives a usable prefix */
  CHECK_ERROR(kiln_model_server_config_parse("x: 1", 4, NULL, &c), KILN_INVALID_ARGUMENT,
              "model config:1:1: unknown field 'x' in ModelServerConfig");
  CHECK_ERROR(kiln_model_server_config_parse(NULL, 0, "models.config", &c), KILN_INVALID_ARGUMENT, "no models");
}

/* Nesting and size are capped, so a hostile file cannot exhaust the stack or memory. */
static void test_limits(void) {
  char deep[400] = "";
  for (int i = 0; i < 40; i++) strcat(deep, "a {");
  MODELS_ERROR(deep, KILN_RESOURCE_EXHAUSTED, "models.config:1:99: messages nested more than 32 deep");
  /* 32 levels is within the cap: the error is about the field, not the depth */
  char ok[400] = "";
  for (int i = 0; i < 32; i++) strcat(ok, "a {");
  for (int i = 0; i < 32; i++) strcat(ok, "}");
  MODELS_ERROR(ok, KILN_INVALID_ARGUMENT, "unknown field 'a' in ModelServerConfig");

  size_t n = 300000;
  char *big = malloc(n * 2 + 64);
  CHECK(big != NULL);
  if (!big) return;
  strcpy(big, "allowed_batch_sizes: [");
  size_t at = strlen(big);
  for (size_t i = 0; i < n; i++) big[at++] = '1', big[at++] = ',';
  strcpy(big + at, "1]");
  kiln_batching_config b;
  CHECK_ERROR(parse_batching(big, &b), KILN_RESOURCE_EXHAUSTED, "the document is too large");
  CHECK(b.allowed_batch_sizes == NULL);
  free(big);
}

static void test_batching_forms(void) {
  kiln_batching_config b;
  kiln_batching_config_default(&b);
  CHECK(b.max_batch_size == 32 && b.batch_timeout_micros == 1000 && b.max_enqueued_batches == 16 &&
        b.num_batch_threads == 0 && b.allowed_batch_sizes == NULL && b.n_allowed_batch_sizes == 0);

  /* TF Serving's documented wrapper form */
  CHECK_OK(parse_batching("max_batch_size { value: 128 }\n"
                          "batch_timeout_micros { value: 0 }\n"
                          "max_enqueued_batches { value: 1000000 }\n"
                          "num_batch_threads { value: 8 }\n"
                          "allowed_batch_sizes: 32\n"
                          "allowed_batch_sizes: 64\n"
                          "allowed_batch_sizes: 128\n"
                          "pad_variable_length_inputs: true\n"
                          "thread_pool_name { value: 'pool' }\n",
                          &b));
  CHECK(b.max_batch_size == 128 && b.batch_timeout_micros == 0 && b.max_enqueued_batches == 1000000 &&
        b.num_batch_threads == 8);
  CHECK(b.n_allowed_batch_sizes == 3 && b.allowed_batch_sizes[0] == 32 && b.allowed_batch_sizes[2] == 128);
  kiln_batching_config_free(&b);
  CHECK(b.allowed_batch_sizes == NULL && b.max_batch_size == 0);

  /* the plain form, a list, and a ':' before the wrapper */
  CHECK_OK(parse_batching("max_batch_size: 64, batch_timeout_micros: { value: 500 } num_batch_threads: 2;"
                          "allowed_batch_sizes: [8, 16, 64] thread_pool_name: 'x' pad_variable_length_inputs: f",
                          &b));
  CHECK(b.max_batch_size == 64 && b.batch_timeout_micros == 500 && b.num_batch_threads == 2 &&
        b.max_enqueued_batches == 16);
  CHECK(b.n_allowed_batch_sizes == 3 && b.allowed_batch_sizes[1] == 16);
  kiln_batching_config_free(&b);

  /* an empty file is all defaults; an empty wrapper is 0, as in protobuf */
  CHECK_OK(parse_batching("# nothing set\n", &b));
  CHECK(b.max_batch_size == 32 && b.batch_timeout_micros == 1000 && b.max_enqueued_batches == 16);
  kiln_batching_config_free(&b);
  CHECK_OK(parse_batching("batch_timeout_micros {}", &b));
  CHECK(b.batch_timeout_micros == 0 && b.max_batch_size == 32);
  kiln_batching_config_free(&b);
  /* the last allowed size matches the default max_batch_size */
  CHECK_OK(parse_batching("allowed_batch_sizes: [4, 32]", &b));
  CHECK(b.n_allowed_batch_sizes == 2 && b.max_batch_size == 32);
  kiln_batching_config_free(&b);
}

static void test_batching_validation(void) {
  BATCHING_ERROR("max_batch_size { value: 0 }", "batching.config:1:25: max_batch_size must be >= 1, got 0");
  BATCHING_ERROR("max_batch_size: -3", "batching.config:1:17: max_batch_size must be >= 1, got -3");
  BATCHING_ERROR("max_batch_size: 100000000", "max_batch_size must be <= 1048576, got 100000000");
  BATCHING_ERROR("batch_timeout_micros: -1", "batch_timeout_micros must be >= 0, got -1");
  BATCHING_ERROR("max_enqueued_batches { value: 0 }", "max_enqueued_batches must be >= 1, got 0");
  BATCHING_ERROR("num_batch_threads: -1", "num_batch_threads must be >= 0, got -1");
  BATCHING_ERROR("max_batch_size: 64 allowed_batch_sizes: [8, 32, 16, 64]",
                 "batching.config:1:49: allowed_batch_sizes must be strictly increasing: 16 after 32");
  BATCHING_ERROR("max_batch_size: 64 allowed_batch_sizes: [8, 8, 64]",
                 "allowed_batch_sizes must be strictly increasing: 8 after 8");
  BATCHING_ERROR("max_batch_size: 64 allowed_batch_sizes: [0, 64]", "allowed_batch_sizes must be positive, got 0");
  BATCHING_ERROR("max_batch_size: 128 allowed_batch_sizes: 32 allowed_batch_sizes: 64",
                 "batching.config:1:66: the last of allowed_batch_sizes (64) must equal max_batch_size (128), as in TF Serving");
  BATCHING_ERROR("allowed_batch_sizes: [8, 16]", "the last of allowed_batch_sizes (16) must equal max_batch_size (32)");
  BATCHING_ERROR("max_batch_sze: 8", "batching.config:1:1: unknown field 'max_batch_sze' in BatchingParameters");
  BATCHING_ERROR("max_batch_size { val: 8 }", "unknown field 'val' in google.protobuf.Int64Value");
  BATCHING_ERROR("max_batch_size: 8 max_batch_size: 16",
                 "batching.config:1:19: field 'max_batch_size' of BatchingParameters is given twice (first at 1:1)");
  BATCHING_ERROR("max_batch_size: '8'", "field 'max_batch_size' of BatchingParameters takes an integer or { value: N }, got a string");
  BATCHING_ERROR("max_batch_size { value: '8' }", "field 'value' of google.protobuf.Int64Value takes an integer, got a string");
  BATCHING_ERROR("allowed_batch_sizes { value: 8 }", "field 'allowed_batch_sizes' of BatchingParameters takes an integer, got a message");
  BATCHING_ERROR("pad_variable_length_inputs: maybe", "field 'pad_variable_length_inputs' of BatchingParameters takes true or false");
  BATCHING_ERROR("thread_pool_name: 3", "takes a string or { value: \"...\" }, got an integer");
  BATCHING_ERROR("enable_large_batch_splitting: true",
                 "field 'enable_large_batch_splitting' of BatchingParameters is not supported by kiln");
  BATCHING_ERROR("max_batch_size { value: 8 ", "batching.config:1:27: missing '}' to close 'max_batch_size' opened at 1:16");

  /* protobuf's bool spellings */
  const char *bools[] = {"pad_variable_length_inputs: t", "pad_variable_length_inputs: True",
                         "pad_variable_length_inputs: 0", "pad_variable_length_inputs: false"};
  for (size_t i = 0; i < sizeof bools / sizeof bools[0]; i++) {
    kiln_batching_config b;
    CHECK_OK(parse_batching(bools[i], &b));
    kiln_batching_config_free(&b);
  }
}

/* Freeing is safe on zeroed structs and twice in a row. */
static void test_free_zeroed(void) {
  kiln_model_server_config c;
  memset(&c, 0, sizeof c);
  kiln_model_server_config_free(&c);
  kiln_model_server_config_free(&c);
  kiln_model_server_config_free(NULL);
  kiln_batching_config b;
  memset(&b, 0, sizeof b);
  kiln_batching_config_free(&b);
  kiln_batching_config_free(&b);
  kiln_batching_config_free(NULL);
  CHECK_OK(parse_models(ONE_MODEL("name: 'm' base_path: '/p' version_labels { key: 'stable' value: 1 }"), &c));
  kiln_model_server_config_free(&c);
  CHECK(c.models == NULL && c.n_models == 0);
  kiln_model_server_config_free(&c);
}

TEST_MAIN(TEST(test_docs_example), TEST(test_default_policy), TEST(test_separators), TEST(test_comments),
          TEST(test_strings), TEST(test_lists), TEST(test_integers), TEST(test_model_validation),
          TEST(test_unknown_and_unsupported), TEST(test_syntax_errors), TEST(test_limits), TEST(test_batching_forms),
          TEST(test_batching_validation), TEST(test_free_zeroed))
