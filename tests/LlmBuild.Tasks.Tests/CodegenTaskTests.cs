using System.Collections.Concurrent;
using LlmBuild.Core.Checkpoints;
using LlmBuild.Core.Diagnostics;
using LlmBuild.Core.Plan;
using LlmBuild.Core.Quantization;
using LlmBuild.Core.Stages;

namespace LlmBuild.Tasks.Tests;

[TestClass]
public sealed class CodegenTaskTests
{
    private static string RepoRoot()
    {
        for (var d = new DirectoryInfo(AppContext.BaseDirectory); d is not null; d = d.Parent)
            if (File.Exists(Path.Combine(d.FullName, "LlmBuild.sln"))) return d.FullName;
        throw new InvalidOperationException("no repository root");
    }

    private static string ModelDir => Path.Combine(RepoRoot(), "examples", "tiny-qwen2", "checkpoint");

    private static string TempDir()
    {
        string dir = Path.Combine(Path.GetTempPath(), "llmbuild-codegen-task-tests", Guid.NewGuid().ToString("N"));
        Directory.CreateDirectory(dir);
        return dir;
    }

    private static (ResolvedModel Model, string ResolvedFile) Resolve(string dir, string quantize, params (string, string)[] extra)
    {
        var props = new Dictionary<string, string?> { ["ModelPath"] = ModelDir, ["SeqLength"] = "32", ["Quantize"] = quantize, ["QGroupSize"] = "64" };
        foreach (var (k, v) in extra) props[k] = v;
        ResolvedModel model = ResolveStage.Resolve(props, new List<LlmBuildWarning>());
        string file = Path.Combine(dir, "resolved.json");
        File.WriteAllText(file, model.ToJson());
        return (model, file);
    }

    /// <summary>A stand-in model_deploy.py: records its arguments (one per line) and writes the --model file.</summary>
    private static string FakeTool(string dir, int exitCode = 0)
    {
        string tool = Path.Combine(dir, "tools", "model_deploy.py");
        Directory.CreateDirectory(Path.GetDirectoryName(tool)!);
        File.WriteAllText(tool, $$"""
            #!/bin/sh
            log="$(dirname "$0")/calls.txt"
            for a in "$@"; do echo "$a" >> "$log"; done
            echo "--end--" >> "$log"
            out=""
            while [ $# -gt 0 ]; do if [ "$1" = "--model" ]; then out="$2"; fi; shift; done
            [ {{exitCode}} -eq 0 ] && echo fake > "$out"
            exit {{exitCode}}
            """.Replace("\r\n", "\n"));
        if (!OperatingSystem.IsWindows()) File.SetUnixFileMode(tool, UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.UserExecute);
        return tool;
    }

    private static List<string[]> Calls(string tool) =>
        File.ReadAllText(Path.Combine(Path.GetDirectoryName(tool)!, "calls.txt")).Split("--end--\n", StringSplitOptions.RemoveEmptyEntries)
            .Select(c => c.Split('\n', StringSplitOptions.RemoveEmptyEntries)).ToList();

    [TestMethod]
    public void TpuMlirDeployRunsModelDeployWithLlmConvertFlags()
    {
        string dir = TempDir();
        var (model, resolved) = Resolve(dir, "w4bf16", ("Chip", "bm1688"), ("Symmetric", "true"));
        string tool = FakeTool(dir);
        string progress = Path.Combine(dir, "progress.jsonl");
        foreach (string piece in new[] { "embedding", "block_0", "block_cache_0", "lm_head" })
        {
            string mlir = Path.Combine(dir, "mlir", piece, piece + ".mlir");
            Directory.CreateDirectory(Path.GetDirectoryName(mlir)!);
            File.WriteAllText(mlir, "module {}");
            var engine = new FakeBuildEngine();
            var task = new TpuMlirDeploy
            {
                BuildEngine = engine, ResolvedFile = resolved, Piece = piece, Mlir = mlir,
                BModel = Path.Combine(dir, "bm1688", piece + ".bmodel"), TpuMlirPath = Path.GetDirectoryName(tool), ProgressFile = progress,
            };
            Assert.IsTrue(task.Execute(), string.Join("\n", engine.Errors.Select(e => e.Message)));
            Assert.AreEqual("fake\n", File.ReadAllText(task.BModel));
            Assert.IsFalse(File.Exists(task.BModel + ".tmp.bmodel"));
        }
        // Each piece is reported as the codegen stage's progress, like the built-in backend's pieces.
        var events = new BuildEventReader(progress).ReadNew();
        CollectionAssert.AreEqual(new[] { "embedding", "block_0", "block_cache_0", "lm_head" }, events.Select(e => e.Piece).ToList());
        Assert.IsTrue(events.All(e => e.Kind == BuildEventKind.PieceDone && e.Stage == "CompileLlmPieces" && e.Seconds >= 0));
        var calls = Calls(tool);
        Assert.AreEqual(4, calls.Count);
        string Joined(int i) => string.Join(" ", calls[i].Select(a => a.StartsWith(dir, StringComparison.Ordinal) ? Path.GetFileName(a) : a));
        Assert.AreEqual("--mlir embedding.mlir --quantize BF16 --quant_output --chip bm1688 --num_core 2 --num_device 1 --model embedding.bmodel.tmp.bmodel", Joined(0));
        Assert.AreEqual("--mlir block_0.mlir --quantize W4BF16 --q_group_size 64 --quant_input --quant_output --chip bm1688 --num_core 2 --num_device 1 --high_precision --q_symmetric --model block_0.bmodel.tmp.bmodel", Joined(1));
        Assert.AreEqual("--mlir block_cache_0.mlir --quantize W4BF16 --q_group_size 64 --quant_input --quant_output --chip bm1688 --num_core 2 --num_device 1 --addr_mode io_alone --high_precision --q_symmetric --model block_cache_0.bmodel.tmp.bmodel", Joined(2));
        Assert.AreEqual("--mlir lm_head.mlir --quantize BF16 --quant_input --chip bm1688 --num_core 2 --num_device 1 --model lm_head.bmodel.tmp.bmodel", Joined(3));
        Directory.Delete(dir, recursive: true);
    }

    [TestMethod]
    public void TpuMlirDeployFailureIsCodedAndLeavesNoBModel()
    {
        string dir = TempDir();
        var (_, resolved) = Resolve(dir, "bf16");
        string tool = FakeTool(dir, exitCode: 3);
        string mlir = Path.Combine(dir, "block_0.mlir");
        File.WriteAllText(mlir, "module {}");
        var engine = new FakeBuildEngine();
        var task = new TpuMlirDeploy { BuildEngine = engine, ResolvedFile = resolved, Piece = "block_0", Mlir = mlir, BModel = Path.Combine(dir, "block_0.bmodel"), TpuMlirPath = tool };
        Assert.IsFalse(task.Execute());
        Assert.IsTrue(engine.Errors.Any(e => e.Code == ErrorCodes.TpuMlirFailed));
        Assert.IsTrue(engine.Errors.All(e => e.Subcategory == "LlmBuild" && ErrorCodes.IsValid(e.Code)), "logged as every LlmBuild task logs");
        Assert.IsFalse(File.Exists(task.BModel));

        var missing = new TpuMlirDeploy { BuildEngine = engine, ResolvedFile = resolved, Piece = "block_0", Mlir = mlir, BModel = task.BModel, TpuMlirPath = Path.Combine(dir, "nowhere") };
        Assert.IsFalse(missing.Execute());
        StringAssert.Contains(engine.Errors.Last().Message, "holds no model_deploy.py");
        Directory.Delete(dir, recursive: true);
    }

    [TestMethod]
    public void VerifyLlmBuildWritesTheReportAndLogsTheTable()
    {
        string dir = TempDir();
        var (model, resolved) = Resolve(dir, "bf16");
        using (ICheckpoint checkpoint = QuantizeStage.OpenSource(model))
            foreach (var owner in model.Owners) QuantizeStage.Run(checkpoint, model, owner.Name, Path.Combine(dir, owner.FileName));
        var pieces = new ConcurrentBag<string>();
        Parallel.ForEach(model.Pieces, p =>
        {
            string mlir = Path.Combine(dir, p.Name + ".mlir"), npz = Path.Combine(dir, p.Name + ".npz"), bmodel = Path.Combine(dir, p.Name + ".bmodel");
            string? owner = p.WeightOwner is null ? null : Path.Combine(dir, model.Owner(p.WeightOwner).FileName);
            ExportStage.Run(model, p, owner, mlir, npz);
            // As the build does: the piece bmodels reference their coefficients, combine streams them.
            Assert.AreEqual(owner is not null, CompileStage.RunReferencing(model, p, mlir, ExportStage.WeightFile(owner, npz), bmodel));
        });
        string output = Path.Combine(dir, "bin", "tiny.bmodel");
        CombineStage.Run(model, model.Pieces.Select(p => Path.Combine(dir, p.Name + ".bmodel")).ToArray(), [], output, Path.Combine(dir, "bin", "config"));
        var engine = new FakeBuildEngine();
        var task = new VerifyLlmBuild { BuildEngine = engine, ResolvedFile = resolved, BModel = output, Report = Path.Combine(dir, "verify.json") };
        Assert.IsTrue(task.Execute(), string.Join("\n", engine.Errors.Select(e => e.Message)));
        Assert.IsTrue(File.Exists(task.Report));
        StringAssert.Contains(engine.AllMessages, "verdict: pass");
        StringAssert.Contains(engine.AllMessages, "block_cache_3");

        var broken = new VerifyLlmBuild { BuildEngine = engine, ResolvedFile = resolved, BModel = Path.Combine(dir, "embedding.bmodel"), Report = Path.Combine(dir, "v2.json") };
        Assert.IsFalse(broken.Execute());
        Assert.IsTrue(engine.Errors.Last().Code.StartsWith("LLMB05", StringComparison.Ordinal), engine.Errors.Last().Message);
        Directory.Delete(dir, recursive: true);
    }
}
