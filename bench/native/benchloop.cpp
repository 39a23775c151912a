// The speed baseline for bench/bench_native.py: ncnn's benchncnn measurement, reduced to one model.
//
// benchncnn.cpp itself is not in ncnn's PyPI sdist (the source deployer builds from), so this file
// re-states what benchncnn does for one model: load the .param, fill weights with zeros (or load the
// real .bin), benchncnn's options (lightmode, int8, fp16 storage/packed/arithmetic, packing, winograd,
// sgemm) with its pool allocators (blob: size_compare_ratio 0, workspace: 0.5), warm up, then time
// create_extractor + input + extract of every output with ncnn::get_current_time. It is linked against the very same
// libncnn.a as the native runner (deployer.native.build.link_program).
//
// usage: benchloop PARAM BIN|- W,H,C LOOPS THREADS WARMUP FP16(0|1)
// prints one JSON line: {"samples_ms": [...], "threads": T}

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <vector>

#include "benchmark.h"
#include "cpu.h"
#include "datareader.h"
#include "net.h"

class ZeroReader : public ncnn::DataReader
{
public:
    virtual int scan(const char*, void*) const
    {
        return 0;
    }
    virtual size_t read(void* buf, size_t size) const
    {
        memset(buf, 0, size);
        return size;
    }
};

int main(int argc, char** argv)
{
    if (argc != 8)
    {
        fprintf(stderr, "usage: %s PARAM BIN|- W,H,C LOOPS THREADS WARMUP FP16\n", argv[0]);
        return 2;
    }
    int w = 0, h = 0, c = 0;
    if (sscanf(argv[3], "%d,%d,%d", &w, &h, &c) != 3 || w <= 0 || h <= 0 || c <= 0)
    {
        fprintf(stderr, "shape must be W,H,C\n");
        return 2;
    }
    int loops = atoi(argv[4]), threads = atoi(argv[5]), warmup = atoi(argv[6]);
    bool fp16 = atoi(argv[7]) != 0;

    static ncnn::UnlockedPoolAllocator blob_pool;
    static ncnn::PoolAllocator workspace_pool;
    blob_pool.set_size_compare_ratio(0.0f);
    workspace_pool.set_size_compare_ratio(0.5f);

    ncnn::Option opt;
    opt.lightmode = true;
    opt.num_threads = threads;
    opt.blob_allocator = &blob_pool;
    opt.workspace_allocator = &workspace_pool;
    opt.use_winograd_convolution = true;
    opt.use_sgemm_convolution = true;
    opt.use_int8_inference = true;
    opt.use_vulkan_compute = false;
    opt.use_fp16_packed = fp16;
    opt.use_fp16_storage = fp16;
    opt.use_fp16_arithmetic = fp16;
    opt.use_int8_storage = true;
    opt.use_int8_arithmetic = true;
    opt.use_packing_layout = true;

    ncnn::set_cpu_powersave(0);
    ncnn::set_omp_dynamic(0);
    ncnn::set_omp_num_threads(threads);

    ncnn::Net net;
    net.opt = opt;
    if (net.load_param(argv[1]) != 0)
    {
        fprintf(stderr, "cannot load %s\n", argv[1]);
        return 2;
    }
    int rc;
    if (strcmp(argv[2], "-") == 0)
    {
        ZeroReader zeros;
        rc = net.load_model(zeros);
    }
    else
        rc = net.load_model(argv[2]);
    if (rc != 0)
    {
        fprintf(stderr, "cannot load weights %s\n", argv[2]);
        return 2;
    }
    ncnn::Mat in(w, h, c);
    in.fill(0.01f);
    const char* input = net.input_names()[0];
    const std::vector<const char*>& outputs = net.output_names();   // benchncnn extracts every output
    for (int i = 0; i < warmup; i++)
    {
        ncnn::Extractor ex = net.create_extractor();
        ex.input(input, in);
        for (size_t j = 0; j < outputs.size(); j++)
        {
            ncnn::Mat out;
            ex.extract(outputs[j], out);
        }
    }
    std::vector<double> samples;
    for (int i = 0; i < loops; i++)
    {
        double start = ncnn::get_current_time();
        {
            ncnn::Extractor ex = net.create_extractor();
            ex.input(input, in);
            for (size_t j = 0; j < outputs.size(); j++)
            {
                ncnn::Mat out;
                ex.extract(outputs[j], out);
            }
        }
        samples.push_back(ncnn::get_current_time() - start);
    }
    printf("{\"samples_ms\": [");
    for (size_t i = 0; i < samples.size(); i++)
        printf("%s%.4f", i ? ", " : "", samples[i]);
    printf("], \"threads\": %d}\n", threads);
    return 0;
}
