using System.Diagnostics;
using LlmBuild.Core.Plan;
using LlmBuild.Core.Stages;

namespace LlmBuild.Benchmarks;

/// <summary>
/// The combine stage alone, in process, on a built project's obj/ (e.g. the one the build benchmark leaves, or any
/// `dotnet build` of a .llmproj): streams every referenced coefficient blob from the weight files into a scratch bmodel,
/// checks its sha256 and fsyncs it, next to copying the output once (cp). Wall and CPU seconds per run.
/// usage: combine PROJECT-DIR [runs (default 3)]
/// </summary>
public sealed class CombineBenchmark : IBenchmark
{
    public string Name => "combine";
    public string Description => "CombineLlmBModel alone on a built project's obj/: wall and CPU seconds vs cp of its output";

    public int Run(string[] args)
    {
        if (args.Length == 0) { Console.WriteLine("usage: combine PROJECT-DIR [runs]"); return 2; }
        string llm = Path.Combine(Path.GetFullPath(args[0]), "obj", "Debug", "llm");
        int runs = args.Length > 1 ? int.Parse(args[1], System.Globalization.CultureInfo.InvariantCulture) : 3;
        var model = ResolvedModel.Load(Path.Combine(llm, "resolved.json"));
        string chipDir = Directory.GetDirectories(llm).First(d => File.Exists(Path.Combine(d, model.Pieces[0].Name + ".bmodel")));
        string[] pieces = model.Pieces.Select(p => Path.Combine(chipDir, p.Name + ".bmodel")).ToArray();
        string work = Path.Combine(Path.GetTempPath(), "llmbuild-bench", "combine-" + Environment.ProcessId);
        Directory.CreateDirectory(work);
        try
        {
            string output = Path.Combine(work, "out.bmodel");
            for (int r = 0; r <= runs; r++)
            {
                File.Delete(output);
                var cpu = Process.GetCurrentProcess().TotalProcessorTime;
                var watch = Stopwatch.StartNew();
                CombineStage.Run(model, pieces, [], output, Path.Combine(work, "config"));
                watch.Stop();
                double cpuSeconds = (Process.GetCurrentProcess().TotalProcessorTime - cpu).TotalSeconds;
                var cp = Stopwatch.StartNew();
                File.Copy(output, output + ".copy", overwrite: true);
                cp.Stop();
                File.Delete(output + ".copy");
                if (r > 0) // the first run warms the JIT and the page cache
                    Console.WriteLine($"combine {new FileInfo(output).Length / 1e6:F0} MB: {watch.Elapsed.TotalSeconds:F2} s wall, {cpuSeconds:F2} s CPU; cp of the output {cp.Elapsed.TotalSeconds:F2} s; load {File.ReadAllText("/proc/loadavg").Split(' ')[0]}");
            }
            return 0;
        }
        finally
        {
            Directory.Delete(work, recursive: true);
        }
    }
}
