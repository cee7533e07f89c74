/* The public, read-only accessors of lf_config (include/longflow.h). */
#include "longflow.h"
#include "model/config.h"

const char *lf_config_architecture(const lf_config *c) { return c->arch_name; }
int lf_config_layers(const lf_config *c) { return c->n_layers; }
int lf_config_hidden_size(const lf_config *c) { return c->hidden_size; }
int lf_config_heads(const lf_config *c) { return c->n_heads; }
int lf_config_kv_heads(const lf_config *c) { return c->n_kv_heads; }
int lf_config_head_dim(const lf_config *c) { return c->head_dim; }
int lf_config_vocab_size(const lf_config *c) { return c->vocab_size; }
int lf_config_context_length(const lf_config *c) { return c->max_position; }
