using LlmBuild.Core.BModel;
using LlmBuild.Core.Chips;
using LlmBuild.Core.Codegen;
using LlmBuild.Core.Diagnostics;
using LlmBuild.Core.Models;
using LlmBuild.Core.Plan;
using LlmBuild.Core.Runtime;
using LlmBuild.Core.Stages;

namespace LlmBuild.Core.Tests.Codegen;

[TestClass]
public sealed class MemoryPlanningTests
{
    private static void AssertNoLiveOverlap(IReadOnlyList<LiveInterval> buffers, long[] offsets, long alignment, long total)
    {
        for (int i = 0; i < buffers.Count; i++)
        {
            Assert.AreEqual(0, offsets[i] % alignment, $"buffer {i} is not aligned");
            Assert.IsTrue(offsets[i] + buffers[i].Size <= total, $"buffer {i} exceeds the planned size");
            for (int j = i + 1; j < buffers.Count; j++)
            {
                if (!buffers[i].OverlapsInTime(buffers[j])) continue;
                bool apart = offsets[i] + buffers[i].Size <= offsets[j] || offsets[j] + buffers[j].Size <= offsets[i];
                Assert.IsTrue(apart, $"buffers {i} and {j} are live together and overlap");
            }
        }
    }

    [TestMethod]
    public void RandomLifetimesNeverShareLiveBytes()
    {
        var rng = new Random(1);
        for (int trial = 0; trial < 200; trial++)
        {
            var buffers = Enumerable.Range(0, rng.Next(1, 40)).Select(_ =>
            {
                int start = rng.Next(0, 50);
                return new LiveInterval(rng.Next(1, 5000), start, start + rng.Next(0, 10));
            }).ToArray();
            long[] offsets = MemoryPlanner.Plan(buffers, 64, out long total);
            AssertNoLiveOverlap(buffers, offsets, 64, total);
        }
    }

    [TestMethod]
    public void DisjointLifetimesReuseMemory()
    {
        var buffers = new[] { new LiveInterval(1000, 0, 1), new LiveInterval(1000, 2, 3), new LiveInterval(1000, 4, 5) };
        long[] offsets = MemoryPlanner.Plan(buffers, 64, out long total);
        Assert.AreEqual(1024, total, "three buffers never live together fit in the space of one");
        CollectionAssert.AreEqual(new long[] { 0, 0, 0 }, offsets);
    }

    /// <summary>In every net of the example, two ctx tensors an instruction uses at the same time never overlap.</summary>
    [TestMethod]
    public void CompiledNetsKeepLiveTensorsApart()
    {
        var built = ExampleBuild.Get("w4bf16");
        foreach (var (name, path) in built.PieceBModels)
        {
            using var c = BModelReader.Read(path);
            var stage = c.Model.Nets[0].Stages[0];
            var program = EmuProgram.Decode(c.GetSpan(stage.CmdGroups[0].BinaryBdc!.Value), name);
            // Rebuild every ctx value's lifetime from the program: an output defines a value, an input uses the latest
            // value defined at that place (a reshape view has the same offset and size, so it is the same value).
            var values = new List<(long Offset, long Bytes, int First, int Last)>();
            for (int i = 0; i < program.Instructions.Count; i++)
            {
                var instr = program.Instructions[i];
                foreach (var t in instr.Inputs.Where(t => t.Region == Region.Ctx))
                {
                    int v = values.FindLastIndex(x => x.Offset == t.Offset && x.Bytes == t.Bytes);
                    Assert.IsTrue(v >= 0, $"{name}: instruction {i} reads {t} before anything wrote it");
                    values[v] = values[v] with { Last = i };
                }
                foreach (var t in instr.Outputs.Where(t => t.Region == Region.Ctx))
                {
                    Assert.IsTrue(t.Offset + t.Bytes <= (long)stage.CtxSize, $"{name}: {t} is outside ctx");
                    values.Add((t.Offset, t.Bytes, i, i));
                }
            }
            foreach (var probe in program.Probes)
            {
                int v = values.FindLastIndex(x => x.Offset == probe.Tensor.Offset && x.Bytes == probe.Tensor.Bytes);
                values[v] = values[v] with { Last = program.Instructions.Count };
            }
            for (int a = 0; a < values.Count; a++)
                for (int b = a + 1; b < values.Count; b++)
                {
                    var (x, y) = (values[a], values[b]);
                    bool together = x.First <= y.Last && y.First <= x.Last;
                    bool overlap = x.Offset < y.Offset + y.Bytes && y.Offset < x.Offset + x.Bytes;
                    Assert.IsFalse(together && overlap, $"{name}: ctx values [{x.Offset}, +{x.Bytes}] (instructions {x.First}..{x.Last}) and [{y.Offset}, +{y.Bytes}] ({y.First}..{y.Last}) are live together and overlap");
                }
        }
    }

    [TestMethod]
    public void DeviceMemoryOverflowIsACodedErrorWithTheNumbers()
    {
        var props = new Dictionary<string, string?>
        {
            ["ModelPath"] = ExampleBuild.ModelDir, ["SeqLength"] = "64", ["Quantize"] = "bf16", ["DeviceMemoryMiB"] = "16",
        };
        // Weights alone exceed the budget: resolve refuses it, before any stage writes anything (issue 19).
        var early = Assert.ThrowsExactly<LlmBuildException>(() => ExampleBuild.Resolve(props));
        Assert.AreEqual(ErrorCodes.DeviceMemoryOverflow, early.Code);
        StringAssert.Contains(early.Message, "weights 37.6 MiB");
        props["DeviceMemoryMiB"] = "";
        ResolvedModel model = ExampleBuild.Resolve(props) with { DeviceMemoryMiB = 16 };
        var e = Assert.ThrowsExactly<LlmBuildException>(() =>
            DeviceMemoryBudget.Compute(model, ChipProfile.BM1684X, 4096, "block_0").Check(model, ChipProfile.BM1684X));
        Assert.AreEqual(ErrorCodes.DeviceMemoryOverflow, e.Code);
        StringAssert.Contains(e.Message, "DeviceMemoryMiB=16");
        StringAssert.Contains(e.Message, "weights 37.6 MiB");
        Console.WriteLine(e.Message);
    }

    [TestMethod]
    public void CompileStageRefusesAModelThatDoesNotFit()
    {
        var built = ExampleBuild.Get("bf16");
        var model = built.Model with { DeviceMemoryMiB = 8 };
        var e = Assert.ThrowsExactly<LlmBuildException>(() =>
            CompileStage.Build(model, model.Piece("embedding"), Path.Combine(built.Dir, "embedding.mlir")));
        Assert.AreEqual(ErrorCodes.DeviceMemoryOverflow, e.Code);
    }

    [TestMethod]
    public void ChipDefaultsAndAlignment()
    {
        Assert.AreEqual(12L * 1024 * 1024 * 1024, ChipProfile.BM1684X.DeviceMemoryBytes(0));
        Assert.AreEqual(100L * 1024 * 1024, ChipProfile.BM1688.DeviceMemoryBytes(100));
        Assert.AreEqual("CV186X-EMU", ChipProfile.Get("cv186x").BModelChip);
        Assert.AreEqual(ErrorCodes.UnsupportedChip, Assert.ThrowsExactly<LlmBuildException>(() => ChipProfile.Get("bm1686")).Code);
        var built = ExampleBuild.Get("w4bf16");
        using var c = BModelReader.Read(built.PieceBModels["block_0"]);
        foreach (var loc in c.Model.Nets[0].Stages[0].CoeffMem!.Locations)
            Assert.AreEqual(0UL, loc.Offset % 4096, $"{loc.Name} is not 4 KiB aligned for bm1684x");
    }

    [TestMethod]
    public void BlockAndBlockCacheShareByteIdenticalWeights()
    {
        var built = ExampleBuild.Get("w4bf16");
        using var block = BModelReader.Read(built.PieceBModels["block_1"]);
        using var cache = BModelReader.Read(built.PieceBModels["block_cache_1"]);
        var a = block.Model.Nets[0].Stages[0].CoeffMem!;
        var b = cache.Model.Nets[0].Stages[0].CoeffMem!;
        CollectionAssert.AreEqual(a.CheckCode.ToArray(), b.CheckCode.ToArray());
        using var combined = BModelReader.Read(built.BModel);
        var refs = combined.Model.Nets.Where(n => n.Name is "block_1" or "block_cache_1").Select(n => n.Stages[0].CoeffMem!.BinaryCoeff).Distinct().ToArray();
        Assert.AreEqual(1, refs.Length, "the combined bmodel stores the shared weights once");
    }

    [TestMethod]
    public void BuildsAreByteIdentical()
    {
        var built = ExampleBuild.Get("w4bf16");
        var model = built.Model;
        var (file, blob) = CompileStage.Build(model, model.Piece("block_0"), Path.Combine(built.Dir, "block_0.mlir"));
        CollectionAssert.AreEqual(File.ReadAllBytes(built.PieceBModels["block_0"]), BModelWriter.ToBytes(file, blob));
    }

    [TestMethod]
    public void EveryChipCompilesTheExample()
    {
        foreach (string chip in new[] { "bm1688", "cv186x" })
        {
            var built = ExampleBuild.Get("w4bf16", chip: chip);
            using var c = BModelReader.Read(built.BModel);
            Assert.AreEqual(ChipProfile.Get(chip).BModelChip, c.Model.Chip);
            using var emu = LlmBuild.Core.Runtime.LlmEmulator.Load(built.BModel);
            Assert.AreEqual(built.Model.Config.VocabSize, emu.Prefill([1, 2, 3]).Length);
        }
    }
}
