/*
 * cuptiprobe.cu - a CUDA program with exactly known GPU work, for
 * tests/gpu/check.sh to run under libtokentrace_cupti.so.
 *
 * In:  cuptiprobe N G  -- N iterations of (kernel, 4 KiB device-to-host
 *      copy, 4 KiB memset), then G launches of a captured graph of 3
 *      kernels, then cudaDeviceReset (the library flushes there).
 * Out: one JSON line on stdout with what it launched and its thread id,
 *      so the checker can demand exact record counts: kernels N + 3G
 *      (or N kernels and G graph records with TOKENTRACE_CUPTI_GRAPHS=graph),
 *      copies N, memsets N. Exit 0, or 1 with the CUDA error.
 * Assumes: one GPU; independent of the reference server's CUDA backend,
 *      so a failure there does not hide the library's own behaviour.
 */
#include <cstdio>
#include <cstdlib>
#include <cuda_runtime.h>
#include <sys/syscall.h>
#include <unistd.h>

__global__ void spin(long long cycles, int *out)
{
	long long t0 = clock64();

	while (clock64() - t0 < cycles)
		;
	if (threadIdx.x == 0)
		out[blockIdx.x] = (int)t0;
}

#define CHECK(x) do { cudaError_t e_ = (x); if (e_ != cudaSuccess) { \
	fprintf(stderr, "cuptiprobe: %s: %s\n", #x, cudaGetErrorString(e_)); \
	return 1; } } while (0)

int main(int argc, char **argv)
{
	int n = argc > 1 ? atoi(argv[1]) : 200;
	int g = argc > 2 ? atoi(argv[2]) : 20;
	int *dev = NULL, *host = NULL;
	cudaStream_t s;
	cudaGraph_t graph;
	cudaGraphExec_t exec;

	CHECK(cudaMalloc(&dev, 4096));
	CHECK(cudaMallocHost(&host, 4096));
	CHECK(cudaStreamCreate(&s));
	for (int i = 0; i < n; i++) {
		spin<<<4, 32, 0, s>>>(20000, dev);
		CHECK(cudaGetLastError());
		CHECK(cudaMemcpyAsync(host, dev, 4096, cudaMemcpyDeviceToHost, s));
		CHECK(cudaMemsetAsync(dev, 0, 4096, s));
	}
	CHECK(cudaStreamSynchronize(s));
	CHECK(cudaStreamBeginCapture(s, cudaStreamCaptureModeGlobal));
	for (int k = 0; k < 3; k++)
		spin<<<2, 32, 0, s>>>(10000, dev);
	CHECK(cudaStreamEndCapture(s, &graph));
	CHECK(cudaGraphInstantiate(&exec, graph, 0));
	for (int i = 0; i < g; i++)
		CHECK(cudaGraphLaunch(exec, s));
	CHECK(cudaStreamSynchronize(s));
	printf("{\"kernels\":%d,\"graph_kernels\":%d,\"graphs\":%d,"
	       "\"copies\":%d,\"memsets\":%d,\"tid\":%ld}\n", n, 3 * g, g, n,
	       n, (long)syscall(SYS_gettid));
	fflush(stdout);
	CHECK(cudaGraphExecDestroy(exec));
	CHECK(cudaGraphDestroy(graph));
	CHECK(cudaDeviceReset());
	return 0;
}
