using System.Diagnostics;
using System.Globalization;
using System.Runtime.InteropServices;

namespace LlmBuild.Benchmarks;

/// <summary>
/// The whole build (`dotnet build` of a .llmproj) of the Qwen2.5-0.5B-shaped random checkpoint the weights benchmark
/// writes, at w4bf16 g128 for BM1684X with verify off: obj/ size per folder against the final bmodel, and cold, no-op
/// and SeqLength-change build times as ratios to copying the checkpoint once (cp, page cache warm) and to building an
/// empty MSBuild project, with the peak RSS of the build's processes (sampled from /proc every 50 ms: the largest
/// single process, and the largest sum over the build's process tree) and the CPU time (user + system) of the build's
/// processes, which a loaded machine disturbs less than wall-clock time.
/// usage: build [checkpoint-dir] [--variants] [--sdk REPO] (--variants adds obj/ sizes for NumDevice=2 and for DoSample +
/// UseBlockWithKv + LoraMaxRank=16; --sdk builds with another checkout's SDK, e.g. an export of an older commit, for a
/// before/after table)
/// </summary>
public sealed partial class BuildBenchmark : IBenchmark
{
    public string Name => "build";
    public string Description => "dotnet build of a 0.5B-shaped model: obj/ per folder, cold/no-op/SeqLength times vs cp and an empty project, peak RSS";

    public int Run(string[] args)
    {
        int sdkAt = Array.IndexOf(args, "--sdk");
        string root = sdkAt >= 0 && sdkAt + 1 < args.Length ? Path.GetFullPath(args[sdkAt + 1]) : RepoRoot();
        string ckpt = args.Where((a, i) => !a.StartsWith("--", StringComparison.Ordinal) && !(sdkAt >= 0 && i == sdkAt + 1)).FirstOrDefault()
            ?? Path.Combine(Path.GetTempPath(), "llmbuild-bench", "qwen2.5-0.5b-shaped");
        bool variants = args.Contains("--variants");
        if (!File.Exists(Path.Combine(ckpt, "model.safetensors"))) WeightsBenchmark.WriteCheckpoint(ckpt);
        Console.WriteLine($"SDK from {root}");
        string work = Path.Combine(Path.GetTempPath(), "llmbuild-bench", "build-" + Environment.ProcessId);
        Directory.CreateDirectory(work);
        try
        {
            // Copying the checkpoint once, page cache warm (the second of two copies).
            string source = Path.Combine(ckpt, "model.safetensors"), copy = Path.Combine(work, "copy.safetensors");
            Run("cp", [source, copy], work);
            File.Delete(copy);
            double cp = Run("cp", [source, copy], work).Seconds;
            File.Delete(copy);

            // An empty MSBuild project: the fixed cost of `dotnet build` on this machine. Both it and the no-op build run as
            // `dotnet build <project>` with the implicit restore, default verbosity and no node reuse (neither has packages:
            // the empty project has no Restore target, an LlmBuild project an empty one).
            string empty = Path.Combine(work, "empty");
            Directory.CreateDirectory(empty);
            File.WriteAllText(Path.Combine(empty, "empty.proj"), "<Project><Target Name=\"Build\" /></Project>\n");
            Run("dotnet", ["build", "empty.proj"], empty);

            string project = Project(work, "main", root, ckpt, []);
            Run("dotnet", ["build", "model.llmproj"], project, check: true); // builds the task assembly once if needed
            Clean(project);
            var cold = Run("dotnet", ["build", "model.llmproj"], project, check: true);
            var sizes = ObjSizes(project);
            // No-op and empty builds alternate, NoOpRounds times each after one warm-up of each: medians, and the median of
            // the rounds' own ratios (each round's two builds see about the same load on a shared machine). Neither is
            // sampled for RSS: the sampler's scans of /proc would take CPU from the sub-second builds it times.
            Run("dotnet", ["build", "model.llmproj"], project, check: true);
            var rounds = Enumerable.Range(0, NoOpRounds).Select(_ =>
                (NoOp: Run("dotnet", ["build", "model.llmproj"], project, check: true, sampleRss: false),
                 Empty: Run("dotnet", ["build", "empty.proj"], empty, check: true, sampleRss: false))).ToList();
            double noopSeconds = Median(rounds.Select(r => r.NoOp.Seconds)), emptyBuild = Median(rounds.Select(r => r.Empty.Seconds));
            double roundRatio = Median(rounds.Select(r => r.NoOp.Seconds / r.Empty.Seconds));
            double noopCpu = Median(rounds.Select(r => r.NoOp.CpuSeconds)), emptyCpu = Median(rounds.Select(r => r.Empty.CpuSeconds));
            var seq = Run("dotnet", ["build", "model.llmproj", "-p:SeqLength=256"], project, check: true);

            Console.WriteLine($"checkpoint {new FileInfo(source).Length / 1e6:F0} MB bf16 (Qwen2.5-0.5B shape), w4bf16 g128, bm1684x, Verify=false, {Environment.ProcessorCount} cores, load {Load()}");
            Console.WriteLine($"cp of the checkpoint (warm)    {cp,7:F2} s");
            Console.WriteLine($"empty MSBuild project build    {emptyBuild,7:F2} s  (median of {NoOpRounds})");
            Console.WriteLine($"cold build                     {cold.Seconds,7:F2} s  = {cold.Seconds / cp:F1}x cp         (target ≤ 5x)   peak RSS {Mib(cold.PeakProcess)} (one process), {Mib(cold.PeakTree)} (all)");
            Console.WriteLine($"no-op build                    {noopSeconds,7:F2} s  = {noopSeconds / emptyBuild:F2}x empty project (target ≤ 1.3x; median of {NoOpRounds}; median of the rounds' ratios {roundRatio:F2}x)");
            Console.WriteLine($"SeqLength 512 → 256            {seq.Seconds,7:F2} s  = {seq.Seconds / cold.Seconds:F2}x cold       (target ≤ 0.5x) peak RSS {Mib(seq.PeakProcess)}");
            Console.WriteLine($"CPU time (user + system)       cold {cold.CpuSeconds:F2} s, no-op {noopCpu:F2} s = {noopCpu / emptyCpu:F2}x the empty project's {emptyCpu:F2} s (medians of {NoOpRounds}), SeqLength change {seq.CpuSeconds:F2} s = {seq.CpuSeconds / cold.CpuSeconds:F2}x cold");
            Print("default", sizes);
            if (variants)
            {
                foreach (var (folder, name, props) in new (string, string, string[])[]
                {
                    ("tp2", "NumDevice=2 (QGroupSize=64: 128 does not split o_proj's inputs in two)", ["NumDevice=2", "QGroupSize=64"]),
                    ("optional-nets", "DoSample+UseBlockWithKv+LoraMaxRank=16", ["DoSample=true", "UseBlockWithKv=true", "LoraMaxRank=16"]),
                })
                {
                    string p = Project(work, folder, root, ckpt, props);
                    var r = Run("dotnet", ["build", "model.llmproj"], p, check: true);
                    Console.WriteLine($"{name}: cold build {r.Seconds:F2} s = {r.Seconds / cp:F1}x cp, peak RSS {Mib(r.PeakProcess)}");
                    Print(name, ObjSizes(p));
                }
            }
            return 0;
        }
        finally
        {
            Directory.Delete(work, recursive: true);
        }
    }

    /// <summary>No-op and empty-project builds measured, alternating.</summary>
    private const int NoOpRounds = 7;

    private static double Median(IEnumerable<double> values)
    {
        var v = values.Order().ToList();
        return v.Count % 2 == 1 ? v[v.Count / 2] : (v[v.Count / 2 - 1] + v[v.Count / 2]) / 2;
    }

    private static string Mib(long bytes) => $"{bytes / 1048576.0:F0} MiB";

    private static string Load() => File.Exists("/proc/loadavg") ? File.ReadAllText("/proc/loadavg").Split(' ')[0] : "?";

    private static void Print(string name, (List<(string Folder, long Bytes)> Folders, long Obj, long BModel) s)
    {
        Console.WriteLine($"obj/ per folder ({name}); final bmodel {s.BModel / 1e6:F1} MB");
        foreach (var (folder, bytes) in s.Folders.OrderByDescending(f => f.Bytes))
            Console.WriteLine($"  {folder,-14} {bytes / 1e6,9:F1} MB  {(double)bytes / s.BModel,5:F2}x");
        Console.WriteLine($"  {"obj/ total",-14} {s.Obj / 1e6,9:F1} MB  {(double)s.Obj / s.BModel,5:F2}x the bmodel (target ≤ 1.3x)");
    }

    private static (List<(string, long)> Folders, long Obj, long BModel) ObjSizes(string project)
    {
        string llm = Path.Combine(project, "obj", "Debug", "llm");
        long Size(string path) => Directory.Exists(path)
            ? Directory.EnumerateFiles(path, "*", SearchOption.AllDirectories).Sum(f => new FileInfo(f).Length) : new FileInfo(path).Length;
        var folders = Directory.EnumerateDirectories(llm).Select(d => (Path.GetFileName(d) + "/", Size(d)))
            .Append(("(files)", Directory.EnumerateFiles(llm).Sum(f => new FileInfo(f).Length))).ToList();
        return (folders, Size(Path.Combine(project, "obj")), new FileInfo(Path.Combine(project, "bin", "bench.bmodel")).Length);
    }

    private static string Project(string work, string name, string root, string ckpt, string[] extra)
    {
        string dir = Path.Combine(work, name);
        Directory.CreateDirectory(dir);
        var props = new List<string>
        {
            $"<ModelPath>{ckpt}</ModelPath>", "<SeqLength>512</SeqLength>", "<Quantize>w4bf16</Quantize>", "<QGroupSize>128</QGroupSize>",
            "<Chip>bm1684x</Chip>", "<LlmModelName>bench</LlmModelName>", "<Verify>false</Verify>", "<LlmCodegenBackend>builtin</LlmCodegenBackend>",
        };
        props.AddRange(extra.Select(e => e.Split('=', 2)).Select(kv => $"<{kv[0]}>{kv[1]}</{kv[0]}>"));
        File.WriteAllText(Path.Combine(dir, "model.llmproj"), $"""
            <Project>
              <Import Project="{root}/build/LlmBuild.Sdk/Sdk/Sdk.props" />
              <PropertyGroup>
                {string.Join("\n    ", props)}
              </PropertyGroup>
              <Import Project="{root}/build/LlmBuild.Sdk/Sdk/Sdk.targets" />
            </Project>
            """);
        return dir;
    }

    private static void Clean(string project)
    {
        foreach (string d in new[] { "obj", "bin" })
            if (Directory.Exists(Path.Combine(project, d))) Directory.Delete(Path.Combine(project, d), recursive: true);
    }

    private sealed record Measured(double Seconds, long PeakProcess, long PeakTree, double CpuSeconds);

    /// <summary>Runs a command to its end, sampling the RSS of its process tree every 50 ms (unless <paramref name="sampleRss"/> is false).</summary>
    private static Measured Run(string file, string[] arguments, string dir, bool check = false, bool sampleRss = true)
    {
        var psi = new ProcessStartInfo(file) { WorkingDirectory = dir, RedirectStandardOutput = true, RedirectStandardError = true };
        foreach (string a in arguments) psi.ArgumentList.Add(a);
        psi.Environment["MSBUILDDISABLENODEREUSE"] = "1";
        double cpuBefore = ChildrenCpuSeconds();
        var watch = Stopwatch.StartNew();
        using var process = Process.Start(psi)!;
        var output = process.StandardOutput.ReadToEndAsync();
        var error = process.StandardError.ReadToEndAsync();
        long peakProcess = 0, peakTree = 0;
        if (!sampleRss) process.WaitForExit();
        while (!process.WaitForExit(50))
        {
            var rss = TreeRss(process.Id);
            peakProcess = Math.Max(peakProcess, rss.Count == 0 ? 0 : rss.Max());
            peakTree = Math.Max(peakTree, rss.Sum());
        }
        watch.Stop();
        if (check && process.ExitCode != 0)
            throw new InvalidOperationException($"{file} {string.Join(' ', arguments)} failed in {dir}:\n{output.Result}\n{error.Result}");
        return new Measured(watch.Elapsed.TotalSeconds, peakProcess, peakTree, ChildrenCpuSeconds() - cpuBefore);
    }

    /// <summary>
    /// User + system CPU seconds of this process's waited-for children and theirs (getrusage RUSAGE_CHILDREN: a build's
    /// MSBuild nodes are counted when the build reaps them); NaN where unavailable. Commands run one at a time, so the
    /// difference around one command is that command's.
    /// </summary>
    private static double ChildrenCpuSeconds()
    {
        if (!OperatingSystem.IsLinux() || getrusage(RusageChildren, out Rusage u) != 0) return double.NaN;
        return u.UserSeconds + u.UserMicroseconds / 1e6 + u.SystemSeconds + u.SystemMicroseconds / 1e6;
    }

    private const int RusageChildren = -1;

    /// <summary>Linux's struct rusage on 64-bit: two timevals, then fourteen counters this benchmark does not read.</summary>
    [StructLayout(LayoutKind.Sequential)]
    private unsafe struct Rusage
    {
        public long UserSeconds, UserMicroseconds, SystemSeconds, SystemMicroseconds;
        public fixed long Counters[14];
    }

    [LibraryImport("libc", SetLastError = true)]
    private static partial int getrusage(int who, out Rusage usage);

    /// <summary>VmRSS of a process and all its descendants (from /proc).</summary>
    private static List<long> TreeRss(int rootPid)
    {
        var parent = new Dictionary<int, int>();
        foreach (string d in Directory.EnumerateDirectories("/proc"))
        {
            if (!int.TryParse(Path.GetFileName(d), out int pid)) continue;
            try
            {
                string stat = File.ReadAllText(Path.Combine(d, "stat"));
                string[] rest = stat[(stat.LastIndexOf(')') + 2)..].Split(' ');
                parent[pid] = int.Parse(rest[1], CultureInfo.InvariantCulture);
            }
            catch (IOException) { }
            catch (UnauthorizedAccessException) { }
        }
        var tree = new HashSet<int> { rootPid };
        bool grew = true;
        while (grew)
        {
            grew = false;
            foreach (var (pid, ppid) in parent)
                if (tree.Contains(ppid) && tree.Add(pid)) grew = true;
        }
        var rss = new List<long>();
        foreach (int pid in tree)
        {
            try
            {
                foreach (string line in File.ReadLines($"/proc/{pid}/status"))
                    if (line.StartsWith("VmRSS:", StringComparison.Ordinal))
                        rss.Add(long.Parse(line[6..].Trim().Split(' ')[0], CultureInfo.InvariantCulture) * 1024);
            }
            catch (IOException) { }
            catch (UnauthorizedAccessException) { }
        }
        return rss;
    }

    private static string RepoRoot()
    {
        for (var d = new DirectoryInfo(AppContext.BaseDirectory); d is not null; d = d.Parent)
            if (File.Exists(Path.Combine(d.FullName, "LlmBuild.sln"))) return d.FullName;
        throw new InvalidOperationException("Run the benchmark from the repository (LlmBuild.sln not found above " + AppContext.BaseDirectory + ").");
    }
}
