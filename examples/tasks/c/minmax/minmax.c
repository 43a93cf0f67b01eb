/*
 * minmax: an Outpost reactor task in C (wasi-libc) that keeps a running
 * minimum and maximum per measurement in the task's kv namespace and
 * publishes an alert when a reading passes the measurement's limit.
 *
 * The input is text, one directive a line (blank lines are skipped, a
 * trailing \r is ignored):
 *
 *   NAME=VALUE   a reading: min and max of NAME are updated (kv key
 *                "stats/NAME", value "MIN MAX"); if NAME has a limit and
 *                VALUE is above it, {"name":..,"value":..,"limit":..} is
 *                published to alerts/NAME with QoS 1
 *   NAME>LIMIT   sets the alert limit of NAME (kv key "limit/NAME")
 *
 * NAME is 1 to 64 bytes of [A-Za-z0-9_.-]; numbers are what strtod accepts,
 * finite. The whole input is checked before anything is stored, so a bad
 * line changes nothing. The output has one line per directive:
 *
 *   temp=31.5 min=20.5 max=31.5 alert>30
 *   temp>30
 *
 * ("alert>LIMIT" only on a reading above its limit). Min and max are
 * idempotent, so a call retried after a failure (for example a refused
 * alert) does not change them twice.
 *
 * Permissions (examples/tasks/c/minmax/manifest.yaml):
 *   permissions: {publish: ["alerts/+"], kv_quota: 64KiB}
 *
 * Build (scripts/build-examples.sh does this):
 *   clang-14 --target=wasm32-wasi -mexec-model=reactor -O2 -I examples/tasks/c \
 *       -o c-minmax.wasm examples/tasks/c/minmax/minmax.c
 */
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "outpost.h"

#define MAX_NAME 64
#define MAX_LINES 1024

enum kind { READING, LIMIT };

struct directive {
	enum kind kind;
	const char *name;
	size_t name_len;
	double value;
};

/* The input buffer and the output, reused by the calls of an instance. */
static uint8_t *in_buf;
static size_t in_cap;
static char *out_buf;
static size_t out_len, out_cap;
static struct directive lines[MAX_LINES];
static char msg[512];

void *outpost_alloc(uint32_t size) {
	if (size > in_cap || in_buf == NULL) {
		size_t cap = size < 256 ? 256 : size;
		uint8_t *p = realloc(in_buf, cap);
		if (p == NULL)
			__builtin_trap(); /* out of memory: the call fails with kind memory */
		in_buf = p;
		in_cap = cap;
	}
	return in_buf;
}

/* failf fails the call with a formatted message. */
static uint64_t failf(const char *format, ...) {
	va_list ap;
	va_start(ap, format);
	vsnprintf(msg, sizeof msg, format, ap);
	va_end(ap);
	outpost_fail_str(msg);
	return 0;
}

/* out appends formatted text to the output. */
static void out(const char *format, ...) {
	va_list ap;
	for (;;) {
		va_start(ap, format);
		int n = vsnprintf(out_buf + out_len, out_cap - out_len, format, ap);
		va_end(ap);
		if (n < 0)
			__builtin_trap();
		if (out_len + (size_t)n < out_cap) {
			out_len += (size_t)n;
			return;
		}
		size_t cap = (out_cap + (size_t)n + 1) * 2;
		char *p = realloc(out_buf, cap);
		if (p == NULL)
			__builtin_trap();
		out_buf = p;
		out_cap = cap;
	}
}

static int name_ok(const char *s, size_t n) {
	if (n == 0 || n > MAX_NAME)
		return 0;
	for (size_t i = 0; i < n; i++) {
		char c = s[i];
		if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' || c == '.' ||
		      c == '-'))
			return 0;
	}
	return 1;
}

/* number parses [s, s+n) as a finite double. */
static int number(const char *s, size_t n, double *v) {
	char buf[64], *end;
	if (n == 0 || n >= sizeof buf)
		return 0;
	memcpy(buf, s, n);
	buf[n] = 0;
	*v = strtod(buf, &end);
	return *end == 0 && isfinite(*v);
}

/* parse checks the whole input and fills lines; it returns the number of
 * directives, or -1 after failing the call. */
static int parse(const char *in, size_t len) {
	int count = 0, line = 0;
	size_t i = 0;
	while (i < len) {
		const char *s = in + i;
		const char *nl = memchr(s, '\n', len - i);
		size_t n = nl ? (size_t)(nl - s) : len - i;
		i += n + 1;
		line++;
		if (n > 0 && s[n - 1] == '\r')
			n--;
		if (n == 0)
			continue;
		const char *op = s;
		while (op < s + n && *op != '=' && *op != '>')
			op++;
		if (op == s + n) {
			failf("line %d: want NAME=VALUE or NAME>LIMIT, got \"%.*s\"", line, (int)(n > 64 ? 64 : n), s);
			return -1;
		}
		size_t name_len = (size_t)(op - s);
		if (!name_ok(s, name_len)) {
			failf("line %d: bad name \"%.*s\": want 1 to %d bytes of A-Z a-z 0-9 _ . -", line,
			      (int)(name_len > 64 ? 64 : name_len), s, MAX_NAME);
			return -1;
		}
		double v;
		size_t vlen = n - name_len - 1;
		if (!number(op + 1, vlen, &v)) {
			failf("line %d: bad number \"%.*s\"", line, (int)(vlen > 64 ? 64 : vlen), op + 1);
			return -1;
		}
		if (count == MAX_LINES) {
			failf("more than %d directives", MAX_LINES);
			return -1;
		}
		lines[count++] = (struct directive){*op == '=' ? READING : LIMIT, s, name_len, v};
	}
	return count;
}

/* get reads kv key PREFIX+NAME into buf as a string: 1 found, 0 not found,
 * -1 after failing the call. */
static int get(const char *prefix, const struct directive *d, char *buf, size_t cap) {
	char key[16 + MAX_NAME];
	int kn = snprintf(key, sizeof key, "%s%.*s", prefix, (int)d->name_len, d->name);
	int32_t n = outpost_kv_get(key, (uint32_t)kn, buf, (uint32_t)(cap - 1));
	if (n == OUTPOST_NOT_FOUND)
		return 0;
	if (n < 0) {
		char held[256];
		failf("kv_get %s: %s", key, outpost_held_str(held, sizeof held));
		return -1;
	}
	if ((size_t)n > cap - 1) {
		failf("kv_get %s: a %d byte value, want at most %d", key, (int)n, (int)(cap - 1));
		return -1;
	}
	buf[n] = 0;
	return 1;
}

/* put stores the string val under PREFIX+NAME: 0, or -1 after failing the call. */
static int put(const char *prefix, const struct directive *d, const char *val) {
	char key[16 + MAX_NAME];
	int kn = snprintf(key, sizeof key, "%s%.*s", prefix, (int)d->name_len, d->name);
	if (outpost_kv_put(key, (uint32_t)kn, val, (uint32_t)strlen(val)) < 0) {
		char held[256];
		failf("kv_put %s: %s", key, outpost_held_str(held, sizeof held));
		return -1;
	}
	return 0;
}

static int reading(const struct directive *d) {
	char buf[128];
	double min = d->value, max = d->value, limit;
	int found = get("stats/", d, buf, sizeof buf);
	if (found < 0)
		return -1;
	if (found) {
		char *end;
		double lo = strtod(buf, &end), hi = strtod(end, &end);
		if (*end != 0) {
			failf("kv stats/%.*s: bad value \"%s\"", (int)d->name_len, d->name, buf);
			return -1;
		}
		min = fmin(min, lo);
		max = fmax(max, hi);
	}
	char val[64];
	snprintf(val, sizeof val, "%.17g %.17g", min, max);
	if (put("stats/", d, val) < 0)
		return -1;
	out("%.*s=%.15g min=%.15g max=%.15g", (int)d->name_len, d->name, d->value, min, max);

	found = get("limit/", d, buf, sizeof buf);
	if (found < 0)
		return -1;
	if (found && d->value > (limit = strtod(buf, NULL))) {
		char topic[16 + MAX_NAME], payload[256];
		int tn = snprintf(topic, sizeof topic, "alerts/%.*s", (int)d->name_len, d->name);
		int pn = snprintf(payload, sizeof payload, "{\"name\":\"%.*s\",\"value\":%.15g,\"limit\":%.15g}",
		                  (int)d->name_len, d->name, d->value, limit);
		if (outpost_publish(topic, (uint32_t)tn, payload, (uint32_t)pn, 1) < 0) {
			char held[256];
			failf("publish %s: %s", topic, outpost_held_str(held, sizeof held));
			return -1;
		}
		snprintf(msg, sizeof msg, "alert: %.*s=%.15g above %.15g", (int)d->name_len, d->name, d->value, limit);
		outpost_log_str(OUTPOST_WARN, msg);
		out(" alert>%.15g", limit);
	}
	out("\n");
	return 0;
}

uint64_t outpost_handle(uint8_t *in, uint32_t len) {
	out_len = 0;
	out(""); /* out_buf is allocated from here on */
	int n = parse((const char *)in, len);
	if (n < 0)
		return 0;
	if (n == 0)
		return failf("no directives: want lines NAME=VALUE or NAME>LIMIT");
	int readings = 0, limits = 0;
	for (int i = 0; i < n; i++) {
		const struct directive *d = &lines[i];
		if (d->kind == LIMIT) {
			char val[32];
			snprintf(val, sizeof val, "%.17g", d->value);
			if (put("limit/", d, val) < 0)
				return 0;
			out("%.*s>%.15g\n", (int)d->name_len, d->name, d->value);
			limits++;
		} else {
			if (reading(d) < 0)
				return 0;
			readings++;
		}
	}
	snprintf(msg, sizeof msg, "%d readings, %d limits", readings, limits);
	outpost_log_str(OUTPOST_INFO, msg);
	return OUTPOST_OUTPUT(out_buf, out_len);
}
