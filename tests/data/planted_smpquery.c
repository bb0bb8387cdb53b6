/* A stand-in for smpquery with a planted bug, for tests/test_fuzz_fabric.py.
 *
 * It runs the real smpquery ($REAL_SMPQUERY) with its arguments, prints what it printed, and then
 * does what a careless tool would: trusts NodeInfo.NumPorts as the size of a 9-entry port array.
 * Built plainly (-g) a NumPorts past 8 is a SIGSEGV in planted_fault(); built with
 * -fsanitize=address -DPLANT_OVERFLOW it is a heap-buffer-overflow that ASan reports.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void planted_fault(int num_ports)
{
#ifdef PLANT_OVERFLOW
	int *ports = calloc(9, sizeof(int));
	for (int i = 0; i <= num_ports && i < 10; i++)
		ports[i] = i;  /* off by one past port 8 */
	free(ports);
#else
	volatile int *ports = NULL;
	*ports = num_ports;
#endif
}

int main(int argc, char **argv)
{
	const char *real = getenv("REAL_SMPQUERY");
	char cmd[4096], line[512];
	int status, num_ports = -1;

	snprintf(cmd, sizeof cmd, "%s", real ? real : "/usr/sbin/smpquery");
	for (int i = 1; i < argc; i++) {
		strncat(cmd, " '", sizeof cmd - strlen(cmd) - 1);
		strncat(cmd, argv[i], sizeof cmd - strlen(cmd) - 1);
		strncat(cmd, "'", sizeof cmd - strlen(cmd) - 1);
	}
	FILE *p = popen(cmd, "r");
	if (!p)
		return 3;
	while (fgets(line, sizeof line, p)) {
		fputs(line, stdout);
		if (!strncmp(line, "NumPorts:", 9))
			num_ports = atoi(line + strspn(line, "NumPorts:."));
	}
	status = pclose(p);
	fflush(stdout);
	if (num_ports > 8)
		planted_fault(num_ports);
	return WIFEXITED(status) ? WEXITSTATUS(status) : 4;
}
