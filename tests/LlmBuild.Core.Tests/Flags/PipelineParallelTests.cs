using System.Diagnostics;
using System.Text.Json;
using LlmBuild.Core.Codegen;
using LlmBuild.Core.Chips;
using LlmBuild.Core.Diagnostics;
using LlmBuild.Core.Plan;
using LlmBuild.Core.Runtime;
using LlmBuild.Core.Tests.Codegen;
using LlmBuild.Core.Tests.Runtime;

namespace LlmBuild.Core.Tests.Flags;

/// <summary>
/// DistributeStrategy=pp: the model cut into per-device stage bmodels as llm_convert's _pp_combine cuts it, packed into
/// &lt;name&gt;_pp.tar with its manifest, decoded by independent readers (python's tarfile, GNU tar), run across emulated
/// devices with the single-device logits, and the device-memory check per device.
/// </summary>
[TestClass]
public sealed class PipelineParallelTests
{
    private static ExampleBuild.Built Pp(int devices = 4) =>
        ExampleBuild.Get("bf16", seqLength: 48, extra: [("NumDevice", devices.ToString()), ("DistributeStrategy", "pp")]);

    private static string Package(ExampleBuild.Built b) => Path.Combine(Path.GetDirectoryName(b.BModel)!, PipelineParallel.PackageFileName(b.Model.Name));

    [TestMethod]
    public void StagesFollowTheReferencesCut()
    {
        var model = Pp().Model;
        var stages = PipelineParallel.Stages(model);
        CollectionAssert.AreEqual(new[] { "embed_vit", "block_00", "block_01", "lmhead" }, stages.Select(s => s.Suffix).ToArray());
        CollectionAssert.AreEqual(new[] { "embedding", "embedding_cache" }, stages[0].Pieces.ToArray());
        CollectionAssert.AreEqual(new[] { "block_0", "block_cache_0", "block_1", "block_cache_1" }, stages[1].Pieces.ToArray());
        CollectionAssert.AreEqual(new[] { 2, 3 }, stages[2].Layers.ToArray());
        CollectionAssert.AreEqual(new[] { "lm_head" }, stages[3].Pieces.ToArray());
        Assert.AreEqual("tiny-qwen2_block_01.bmodel", stages[2].FileName("tiny-qwen2"));
        Assert.AreEqual(1, LlmBuild.Core.Plan.TensorParallel.Devices(model), "pp stages run whole nets");
        Assert.IsTrue(model.FinalNormInLastBlock);

        // 4 layers on 3 block devices: ⌈4/3⌉ = 2 per device leaves the third empty; 2 devices leave none for the layers.
        foreach (int n in new[] { 2, 5 })
        {
            var values = new Dictionary<string, string?> { ["ModelPath"] = ExampleBuild.ModelDir, ["SeqLength"] = "48", ["Quantize"] = "bf16", ["NumDevice"] = n.ToString(), ["DistributeStrategy"] = "pp" };
            Assert.AreEqual(ErrorCodes.PipelineSplit, Assert.ThrowsExactly<LlmBuildException>(() => ExampleBuild.Resolve(values)).Code, $"NumDevice={n}");
        }
    }

    [TestMethod]
    public void ThePackageIsAPosixTarThatIndependentReadersDecode()
    {
        var built = Pp();
        string tar = Package(built);
        Assert.IsTrue(File.Exists(tar), tar);
        string manifestPath = Path.ChangeExtension(tar, ".json");
        var manifest = JsonSerializer.Deserialize<PipelineManifest>(File.ReadAllText(manifestPath), PipelineManifest.Json)!;
        Assert.AreEqual(4, manifest.NumDevice);
        Assert.AreEqual(0, new FileInfo(tar).Length % 10240, "whole records");

        // python's tarfile: every member's name, size and sha256, and the archive format.
        string script = """
            import hashlib, json, sys, tarfile
            with tarfile.open(sys.argv[1], "r:") as t:
                out = []
                for m in t.getmembers():
                    data = t.extractfile(m).read()
                    out.append({"name": m.name, "size": m.size, "type": m.type.decode(), "mode": m.mode, "mtime": m.mtime, "sha256": hashlib.sha256(data).hexdigest()})
                print(json.dumps(out))
            """;
        string python = Run("python3", ["-c", script, tar]);
        var members = JsonDocument.Parse(python).RootElement.EnumerateArray().ToArray();
        Assert.AreEqual(1 + manifest.Stages.Count, members.Length);
        Assert.AreEqual("tiny-qwen2_pp.json", members[0].GetProperty("name").GetString());
        Assert.AreEqual(new FileInfo(manifestPath).Length, members[0].GetProperty("size").GetInt64());
        for (int i = 0; i < manifest.Stages.Count; i++)
        {
            var m = members[i + 1];
            Assert.AreEqual(manifest.Stages[i].File, m.GetProperty("name").GetString());
            Assert.AreEqual(manifest.Stages[i].Bytes, m.GetProperty("size").GetInt64());
            Assert.AreEqual(manifest.Stages[i].Sha256, m.GetProperty("sha256").GetString());
            Assert.AreEqual("0", m.GetProperty("type").GetString());
            Assert.AreEqual(0, m.GetProperty("mtime").GetInt64(), "reproducible");
        }
        // GNU tar lists the same members with no complaint.
        string listing = Run("tar", ["-tvf", tar]);
        Console.WriteLine(listing);
        foreach (var stage in manifest.Stages) StringAssert.Contains(listing, stage.File);
    }

    [TestMethod]
    public void ThePackageRunsAcrossEmulatedDevicesWithTheSingleDeviceLogits()
    {
        var single = ExampleBuild.Get("bf16", seqLength: 48);
        var built = Pp();
        using var one = LlmEmulator.Load(single.BModel);
        using var pp = PipelineEmulator.Load(Package(built));
        Assert.AreEqual(4, pp.Devices);
        int[] prompt = [9707, 11, 1879, 374, 264, 1273, 315, 279, 2041, 13, 576, 3974];
        float[] a = one.Prefill(prompt, allPositions: true), b = pp.Prefill(prompt);
        double worst = EmulatorGoldenTests.Cosine(a, b);
        float[] la = a.AsSpan(a.Length - one.VocabSize).ToArray(), lb = b.AsSpan(b.Length - pp.VocabSize).ToArray();
        for (int step = 0; step < 16; step++)
        {
            int token = LlmEmulator.ArgMax(la);
            Assert.AreEqual(token, LlmEmulator.ArgMax(lb), $"greedy step {step}");
            la = one.Decode(token);
            lb = pp.Decode(token);
            worst = Math.Min(worst, EmulatorGoldenTests.Cosine(la, lb));
        }
        double maxDiff = la.Zip(lb).Max(p => Math.Abs(p.First - p.Second));
        Console.WriteLine($"pp vs single device: worst cosine {worst:0.0000000}, last step max |diff| {maxDiff}, {pp.TransferredBytes} bytes between devices");
        Assert.IsTrue(worst > 0.99999, $"cosine {worst}");
        Assert.IsTrue(pp.TransferredBytes > 0);
    }

    [TestMethod]
    public void DeviceMemoryIsCheckedPerDevice()
    {
        var model = Pp().Model;
        var chip = ChipProfile.Get(model.Options.Chip);
        var budgets = DeviceMemoryBudget.EstimateDevices(model, chip);
        Assert.AreEqual(4, budgets.Count);
        var single = ExampleBuild.Get("bf16", seqLength: 48).Model;
        var whole = DeviceMemoryBudget.Estimate(single, chip);
        Assert.AreEqual(0, budgets[0].KvCacheBytes + budgets[3].KvCacheBytes, "no layers on the embed and head devices");
        Assert.AreEqual(whole.KvCacheBytes, budgets[1].KvCacheBytes + budgets[2].KvCacheBytes, "the layers' KV split over the block devices");
        Assert.IsTrue(budgets.All(b => b.WeightBytes < whole.WeightBytes), "each device holds a part of the weights");
        // A budget the largest device exceeds names that device.
        long largest = budgets.Max(b => b.TotalBytes);
        var tight = model with { DeviceMemoryMiB = (int)(largest / (1024 * 1024)) };
        var failing = DeviceMemoryBudget.EstimateDevices(tight, chip).First(b => b.TotalBytes > b.BudgetBytes);
        var e = Assert.ThrowsExactly<LlmBuildException>(() => failing.Check(tight, chip));
        Assert.AreEqual(ErrorCodes.DeviceMemoryOverflow, e.Code);
        StringAssert.Contains(e.Message, $"on device {failing.Device} (of NumDevice=4)");
    }

    [TestMethod]
    public void ADamagedPackageIsACodedError()
    {
        var built = Pp();
        string copy = Path.Combine(built.Dir, "damaged_pp.tar");
        byte[] bytes = File.ReadAllBytes(Package(built));
        bytes[600] ^= 0xFF; // inside the manifest's data: its sha256 is not checked, but the JSON breaks or a header moves
        bytes[148] ^= 0x01; // the first header's checksum field
        File.WriteAllBytes(copy, bytes);
        Assert.AreEqual(ErrorCodes.BadPipelinePackage, Assert.ThrowsExactly<LlmBuildException>(() => PipelineEmulator.Load(copy)).Code);
        File.WriteAllBytes(copy, File.ReadAllBytes(Package(built)).AsSpan(0, 4096).ToArray());
        Assert.AreEqual(ErrorCodes.BadPipelinePackage, Assert.ThrowsExactly<LlmBuildException>(() => PipelineEmulator.Load(copy)).Code, "truncated");
    }

    private static string Run(string file, string[] args)
    {
        var psi = new ProcessStartInfo(file) { RedirectStandardOutput = true, RedirectStandardError = true };
        foreach (string a in args) psi.ArgumentList.Add(a);
        using var p = Process.Start(psi)!;
        string stdout = p.StandardOutput.ReadToEnd(), stderr = p.StandardError.ReadToEnd();
        p.WaitForExit();
        Assert.AreEqual(0, p.ExitCode, $"{file} failed: {stderr}");
        return stdout;
    }
}
