/* The Unicode Script property of a code point, through PCRE2's \\p{sc:...}
 * (utf8proc has no script data), for the UnicodeScripts pre-tokenizer. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tokenizer/tok_internal.h"

/* The scripts PCRE2 knows (pcre2test -LS); the index is the script's id. */
static const char *const SCRIPTS[] = {
    "adlam", "ahom", "anatolianhieroglyphs", "arabic", "armenian", "avestan", "balinese", "bamum",
    "bassavah", "batak", "bengali", "bhaiksuki", "bopomofo", "brahmi", "braille", "buginese", "buhid",
    "canadianaboriginal", "carian", "caucasianalbanian", "chakma", "cham", "cherokee", "chorasmian",
    "common", "coptic", "cuneiform", "cypriot", "cyprominoan", "cyrillic", "deseret", "devanagari",
    "divesakuru", "dogra", "duployan", "egyptianhieroglyphs", "elbasan", "elymaic", "ethiopic", "georgian",
    "glagolitic", "gothic", "grantha", "greek", "gujarati", "gunjalagondi", "gurmukhi", "han", "hangul",
    "hanifirohingya", "hanunoo", "hatran", "hebrew", "hiragana", "imperialaramaic", "inherited",
    "inscriptionalpahlavi", "inscriptionalparthian", "javanese", "kaithi", "kannada", "katakana", "kayahli",
    "kharoshthi", "khitansmallscript", "khmer", "khojki", "khudawadi", "lao", "latin", "lepcha", "limbu",
    "lineara", "linearb", "lisu", "lycian", "lydian", "mahajani", "makasar", "malayalam", "mandaic",
    "manichaean", "marchen", "masaramgondi", "medefaidrin", "meeteimayek", "mendekikakui",
    "meroiticcursive", "meroitichieroglyphs", "miao", "modi", "mongolian", "mro", "multani", "myanmar",
    "nabataean", "nandinagari", "newa", "newtailue", "nko", "nushu", "nyiakengpuachuehmong", "ogham",
    "olchiki", "oldhungarian", "olditalic", "oldnortharabian", "oldpermic", "oldpersian", "oldsogdian",
    "oldsoutharabian", "oldturkic", "olduyghur", "oriya", "osage", "osmanya", "pahawhhmong", "palmyrene",
    "paucinhau", "phagspa", "phoenician", "psalterpahlavi", "rejang", "runic", "samaritan", "saurashtra",
    "sharada", "shavian", "siddham", "signwriting", "sinhala", "sogdian", "sorasompeng", "soyombo",
    "sundanese", "sylotinagri", "syriac", "tagalog", "tagbanwa", "taile", "taitham", "taiviet", "takri",
    "tamil", "tangsa", "tangut", "telugu", "thaana", "thai", "tibetan", "tifinagh", "tirhuta", "toto",
    "ugaritic", "unknown", "vai", "vithkuqi", "wancho", "warangciti", "yezidi", "yiii", "zanabazarsquare"
};
#define N_SCRIPTS ((int)(sizeof SCRIPTS / sizeof SCRIPTS[0]))

/* One pattern, one capture group per script: the group that matched names
 * the script. The Basic Multilingual Plane is tabulated once. */
static pcre2_code *re;
static uint8_t bmp[0x10000];
static pthread_once_t once = PTHREAD_ONCE_INIT;

static int match_script(pcre2_match_data *md, uint32_t cp) {
    char enc[4];
    int k = lf_utf8_encode(cp, enc);
    if (pcre2_match(re, (PCRE2_SPTR)enc, (size_t)k, 0, PCRE2_ANCHORED, md, NULL) < 0) return -1;
    PCRE2_SIZE *ov = pcre2_get_ovector_pointer(md);
    for (int g = 1; g <= N_SCRIPTS; g++)
        if (ov[2 * g] != PCRE2_UNSET) return g - 1;
    return -1;
}

static void init(void) {
    size_t cap = 16;
    for (int i = 0; i < N_SCRIPTS; i++) cap += strlen(SCRIPTS[i]) + 12;
    char *pat = malloc(cap);
    if (!pat) return;
    size_t n = 0;
    for (int i = 0; i < N_SCRIPTS; i++) n += (size_t)snprintf(pat + n, cap - n, "%s(\\p{sc:%s})", i ? "|" : "", SCRIPTS[i]);
    int ec;
    PCRE2_SIZE eo;
    re = pcre2_compile((PCRE2_SPTR)pat, n, PCRE2_UTF, &ec, &eo, NULL);
    free(pat);
    if (!re) return;
    pcre2_jit_compile(re, PCRE2_JIT_COMPLETE); /* faster when it works, else interpreted */
    pcre2_match_data *md = pcre2_match_data_create_from_pattern(re, NULL);
    if (!md) {
        pcre2_code_free(re);
        re = NULL;
        return;
    }
    for (uint32_t cp = 0; cp < 0x10000; cp++) {
        int s = cp >= 0xD800 && cp < 0xE000 ? -1 : match_script(md, cp);
        bmp[cp] = (uint8_t)(s < 0 ? 255 : s);
    }
    pcre2_match_data_free(md);
}

int lf_uni_script(uint32_t cp) {
    pthread_once(&once, init);
    if (!re) return -2;
    if (cp < 0x10000) return bmp[cp] == 255 ? -1 : bmp[cp];
    pcre2_match_data *md = pcre2_match_data_create_from_pattern(re, NULL);
    if (!md) return -2;
    int s = match_script(md, cp);
    pcre2_match_data_free(md);
    return s;
}

int lf_uni_script_id(const char *name) {
    for (int i = 0; i < N_SCRIPTS; i++)
        if (!strcmp(SCRIPTS[i], name)) return i;
    return -1;
}
