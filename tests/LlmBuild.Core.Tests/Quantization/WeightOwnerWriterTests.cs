using LlmBuild.Core.Checkpoints;
using LlmBuild.Core.Diagnostics;
using LlmBuild.Core.Models;
using LlmBuild.Core.Numerics;
using LlmBuild.Core.Numpy;
using LlmBuild.Core.Plan;
using LlmBuild.Core.Quantization;
using LlmBuild.Core.Tests.Checkpoints;

namespace LlmBuild.Core.Tests.Quantization;

[TestClass]
public sealed class WeightOwnerWriterTests
{
    private static string ExampleDir => Path.Combine(TestFiles.RepoRoot(), "examples", "tiny-qwen2", "checkpoint");

    internal static ResolvedModel Model(ModelConfig config, string activation, QuantScheme scheme, IReadOnlyList<WeightOwner> owners) => new()
    {
        Name = "test",
        Options = new BuildOptions { ModelPath = ".", SeqLength = 16 },
        Config = config,
        Family = ModelFamilies.Get(config.ModelType).Name,
        ActivationDtype = activation,
        Quantize = scheme.IsQuantized ? $"w{scheme.Bits}{activation}" : activation,
        Weights = scheme,
        WeightFiles = ["model.safetensors"],
        Pieces = [],
        Owners = owners,
    };

    private static WeightOwner Block0()
    {
        var family = ModelFamilies.Get("qwen2");
        WeightEntry E(WeightRole role, WeightStorage storage, params long[] shape) =>
            new(role, 0, family.TensorName(role, 0), family.TensorName(role, 0), storage, shape);
        return new WeightOwner("block_0",
        [
            E(WeightRole.InputNorm, WeightStorage.Activation, 64),
            E(WeightRole.QProj, WeightStorage.Quantized, 64, 64),
            E(WeightRole.QBias, WeightStorage.Float32, 64),
            E(WeightRole.KProj, WeightStorage.Quantized, 32, 64),
            E(WeightRole.MlpDown, WeightStorage.Quantized, 64, 192),
            E(WeightRole.MlpUp, WeightStorage.Activation, 192, 64),
        ]);
    }

    [TestMethod]
    [DataRow("bf16", 4, 32, false)]
    [DataRow("f16", 8, 0, true)]
    public void WritesEachStorageExactly(string activation, int bits, int group, bool symmetric)
    {
        var config = ModelConfig.Load(ExampleDir);
        var owner = Block0();
        var scheme = new QuantScheme(bits, group, symmetric);
        var model = Model(config, activation, scheme, [owner]);
        string npzPath = Path.Combine(TestFiles.TempDir(), owner.FileName);
        using var checkpoint = CheckpointLoader.Open(ExampleDir);
        WeightOwnerWriter.Write(checkpoint, model, owner, npzPath);

        using var npz = new NpzReader(npzPath);
        string[] expectedKeys =
        [
            "model.layers.0.input_layernorm.weight",
            "model.layers.0.self_attn.q_proj.qweight", "model.layers.0.self_attn.q_proj.scales", "model.layers.0.self_attn.q_proj.qzeros",
            "model.layers.0.self_attn.q_proj.bias",
            "model.layers.0.self_attn.k_proj.qweight", "model.layers.0.self_attn.k_proj.scales", "model.layers.0.self_attn.k_proj.qzeros",
            "model.layers.0.mlp.down_proj.qweight", "model.layers.0.mlp.down_proj.scales", "model.layers.0.mlp.down_proj.qzeros",
            "model.layers.0.mlp.up_proj.weight",
        ];
        CollectionAssert.AreEqual(expectedKeys, npz.Keys.ToArray());

        foreach (var entry in owner.Entries)
        {
            var info = checkpoint.GetInfo(entry.SourceTensor);
            float[] source = new float[info.ElementCount];
            checkpoint.ReadFloat32(entry.SourceTensor, source);
            switch (entry.Storage)
            {
                case WeightStorage.Activation:
                {
                    var e = npz.GetEntry(entry.Key);
                    Assert.AreEqual(activation == "bf16" ? "<u2" : "<f2", e.Descr);
                    CollectionAssert.AreEqual(entry.Shape, e.Shape);
                    ushort[] expected = source.Select(v => activation == "bf16" ? FloatFormats.FloatToBFloat16Scalar(v) : FloatFormats.FloatToHalfScalar(v)).ToArray();
                    CollectionAssert.AreEqual(TestFiles.Bytes(expected), npz.ReadBytes(entry.Key), entry.Key);
                    break;
                }
                case WeightStorage.Float32:
                    Assert.AreEqual("<f4", npz.GetEntry(entry.Key).Descr);
                    CollectionAssert.AreEqual(source, npz.ReadFloat32(entry.Key));
                    break;
                case WeightStorage.Quantized:
                {
                    int n = (int)entry.Shape[0], k = (int)entry.Shape[1], g = group == 0 ? k : group;
                    // Independent reference: the scalar quantizer, row by row.
                    int rowBytes = bits == 4 ? k / 2 : k;
                    byte[] qw = new byte[n * rowBytes];
                    float[] s = new float[n * (k / g)];
                    byte[] z = new byte[n * (k / g)];
                    for (int r = 0; r < n; r++)
                        LinearQuantizer.QuantizeRowScalar(source.AsSpan(r * k, k), bits, g, symmetric, qw.AsSpan(r * rowBytes, rowBytes), s.AsSpan(r * (k / g), k / g), z.AsSpan(r * (k / g), k / g));
                    var qe = npz.GetEntry(WeightKeys.QWeight(entry.Key));
                    Assert.AreEqual("|u1", qe.Descr);
                    CollectionAssert.AreEqual(new long[] { n, rowBytes }, qe.Shape);
                    CollectionAssert.AreEqual(qw, npz.ReadBytes(qe.Key));
                    CollectionAssert.AreEqual(new long[] { n, k / g }, npz.GetEntry(WeightKeys.Scales(entry.Key)).Shape);
                    Assert.AreEqual("<f4", npz.GetEntry(WeightKeys.Scales(entry.Key)).Descr);
                    CollectionAssert.AreEqual(s, npz.ReadFloat32(WeightKeys.Scales(entry.Key)));
                    Assert.AreEqual("|u1", npz.GetEntry(WeightKeys.QZeros(entry.Key)).Descr);
                    CollectionAssert.AreEqual(z, npz.ReadBytes(WeightKeys.QZeros(entry.Key)));
                    break;
                }
            }
        }
    }

    [TestMethod]
    public void OutputIsByteIdenticalAcrossRuns()
    {
        var config = ModelConfig.Load(ExampleDir);
        var owner = Block0();
        var model = Model(config, "bf16", new QuantScheme(4, 64, false), [owner]);
        string dir = TestFiles.TempDir();
        using var checkpoint = CheckpointLoader.Open(ExampleDir);
        WeightOwnerWriter.Write(checkpoint, model, owner, Path.Combine(dir, "a.npz"));
        WeightOwnerWriter.Write(checkpoint, model, owner, Path.Combine(dir, "b.npz"));
        CollectionAssert.AreEqual(File.ReadAllBytes(Path.Combine(dir, "a.npz")), File.ReadAllBytes(Path.Combine(dir, "b.npz")));
        Assert.AreEqual(2, Directory.GetFiles(dir).Length, "no temporary files are left behind");
    }

    [TestMethod]
    public void ShapeDisagreeingWithConfigIsACodedErrorAndWritesNothing()
    {
        var config = ModelConfig.Load(ExampleDir);
        var family = ModelFamilies.Get("qwen2");
        string name = family.TensorName(WeightRole.QProj, 0);
        var owner = new WeightOwner("block_0", [new WeightEntry(WeightRole.QProj, 0, name, name, WeightStorage.Quantized, [64, 128])]);
        var model = Model(config, "bf16", new QuantScheme(4, 64, false), [owner]);
        string dir = TestFiles.TempDir();
        using var checkpoint = CheckpointLoader.Open(ExampleDir);
        var e = Assert.ThrowsExactly<LlmBuildException>(() => WeightOwnerWriter.Write(checkpoint, model, owner, Path.Combine(dir, "x.npz")));
        Assert.AreEqual(ErrorCodes.TensorShapeMismatch, e.Code);
        StringAssert.Contains(e.Message, name);
        StringAssert.Contains(e.Message, "model.safetensors");
        Assert.AreEqual(0, Directory.GetFiles(dir).Length);
    }

    [TestMethod]
    public void GroupSizeNotDividingKNamesTheTensor()
    {
        var config = ModelConfig.Load(ExampleDir);
        var family = ModelFamilies.Get("qwen2");
        string name = family.TensorName(WeightRole.MlpDown, 0);
        var owner = new WeightOwner("block_0", [new WeightEntry(WeightRole.MlpDown, 0, name, name, WeightStorage.Quantized, [64, 192])]);
        var model = Model(config, "bf16", new QuantScheme(4, 128, false), [owner]);
        using var checkpoint = CheckpointLoader.Open(ExampleDir);
        var e = Assert.ThrowsExactly<LlmBuildException>(() => WeightOwnerWriter.Write(checkpoint, model, owner, Path.Combine(TestFiles.TempDir(), "x.npz")));
        Assert.AreEqual(ErrorCodes.BadGroupSize, e.Code);
        StringAssert.Contains(e.Message, name);
    }
}
