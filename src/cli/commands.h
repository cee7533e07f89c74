/* The longflow subcommands; each takes the arguments after its name and
 * returns the process exit status. */
#ifndef LF_CLI_COMMANDS_H
#define LF_CLI_COMMANDS_H

int lf_cmd_generate(int argc, char **argv);   /* cmd_generate.c */
int lf_cmd_tokenize(int argc, char **argv);   /* cmd_tokenize.c */
int lf_cmd_detokenize(int argc, char **argv); /* cmd_tokenize.c */
int lf_cmd_bench(int argc, char **argv);      /* cmd_bench.c */
int lf_cmd_policies(int argc, char **argv);   /* cmd_policies.c */
int lf_cmd_eval(int argc, char **argv);       /* cmd_eval.c */
int lf_cmd_serve(int argc, char **argv);      /* cmd_serve.c */
int lf_cmd_perplexity(int argc, char **argv); /* cmd_perplexity.c */

#endif
