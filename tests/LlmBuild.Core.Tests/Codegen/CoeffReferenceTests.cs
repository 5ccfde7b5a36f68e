using System.Security.Cryptography;
using LlmBuild.Core.Codegen;
using LlmBuild.Core.Diagnostics;
using LlmBuild.Core.Numpy;
using LlmBuild.Core.Stages;

namespace LlmBuild.Core.Tests.Codegen;

/// <summary>
/// DESIGN §14 at the stage level: pieces exported to name their owner's weight file and compiled to reference their
/// coefficients combine to the same bytes as self-contained pieces holding copies; a weight file that changes after
/// compiling is refused (LLMB0430) and the pieces that read it are deleted.
/// </summary>
[TestClass]
public sealed class CoeffReferenceTests
{
    public TestContext TestContext { get; set; } = null!;

    private string BuildReferencing(ExampleBuild.Built built, string label)
    {
        var model = built.Model;
        string dir = Path.Combine(TestContext.TestRunDirectory ?? Path.GetTempPath(), "coeff-refs", label + "-" + Guid.NewGuid().ToString("N"));
        string weights = Path.Combine(dir, "weights");
        using (var checkpoint = QuantizeStage.OpenSource(model))
            foreach (var owner in model.Owners) QuantizeStage.Run(checkpoint, model, owner.Name, Path.Combine(weights, owner.FileName));
        foreach (var piece in model.Pieces)
        {
            string folder = Path.Combine(dir, "mlir", piece.Name);
            string mlir = Path.Combine(folder, piece.Name + ".mlir"), npz = Path.Combine(folder, piece.Name + "_top_weights.npz");
            string? owner = piece.WeightOwner is null ? null : Path.Combine(weights, model.Owner(piece.WeightOwner).FileName);
            ExportStage.Run(model, piece, owner, mlir, npz);
            Assert.AreEqual(owner is not null, CompileStage.RunReferencing(model, piece, mlir, ExportStage.WeightFile(owner, npz),
                Path.Combine(dir, "bm1684x", piece.Name + ".bmodel")), piece.Name);
        }
        return dir;
    }

    private static string Combine(ExampleBuild.Built built, string dir) =>
        Combine(built, dir, Path.Combine(dir, "bin", "model.bmodel"));

    private static string Combine(ExampleBuild.Built built, string dir, string output)
    {
        CombineStage.Run(built.Model, built.Model.Pieces.Select(p => Path.Combine(dir, "bm1684x", p.Name + ".bmodel")).ToArray(), [], output, Path.Combine(dir, "bin", "config"));
        return output;
    }

    [TestMethod]
    [DataRow("w4bf16", 1)]
    [DataRow("bf16", 2)]
    public void ReferencingPiecesCombineToTheBytesOfWholePieces(string quantize, int devices)
    {
        var built = devices == 1 ? ExampleBuild.Get(quantize) : ExampleBuild.Get(quantize, 64, 64, "bm1684x", ("NumDevice", devices.ToString()));
        string dir = BuildReferencing(built, quantize + devices);
        long pieceBytes = Directory.GetFiles(Path.Combine(dir, "bm1684x")).Sum(f => new FileInfo(f).Length);
        string output = Combine(built, dir);
        CollectionAssert.AreEqual(SHA256.HashData(File.ReadAllBytes(built.BModel)), SHA256.HashData(File.ReadAllBytes(output)),
            "streamed coefficients give the bytes of whole piece bmodels");
        Assert.IsTrue(pieceBytes < new FileInfo(output).Length / 10, $"piece bmodels hold no coefficients ({pieceBytes} bytes)");
        Assert.IsFalse(Directory.GetFiles(Path.Combine(dir, "mlir"), "*.npz", SearchOption.AllDirectories).Any(), "no weight copies beside the modules");
        Directory.Delete(dir, recursive: true);
    }

    /// <summary>
    /// Same entries, same directory CRCs, one data byte flipped in place and the file's time put back: only a check of
    /// the streamed bytes can see it. On one device a block's blob is made of whole entries and this process computed
    /// its sha256 from the file as it looks, so combine checks each entry's CRC-32; on two each device's blob takes rows
    /// of the entries, so combine hashes it.
    /// </summary>
    [TestMethod]
    [DataRow(1, "CRC-32")]
    [DataRow(2, "sha256")]
    public void AChangedWeightFileIsRefusedAndItsPiecesDeleted(int devices, string check)
    {
        var built = devices == 1 ? ExampleBuild.Get("w4bf16") : ExampleBuild.Get("w4bf16", 64, 32, "bm1684x", ("NumDevice", devices.ToString()));
        string dir = BuildReferencing(built, "stale" + devices);
        string block = Path.Combine(dir, "weights", "block_2_top_weights.npz");
        long at;
        using (var npz = new NpzReader(block)) at = npz.Entries.First(e => e.Key.EndsWith(".qweight", StringComparison.Ordinal)).DataOffset + 5;
        DateTime time = File.GetLastWriteTimeUtc(block);
        using (var f = new FileStream(block, FileMode.Open, FileAccess.ReadWrite))
        {
            f.Position = at;
            int b = f.ReadByte();
            f.Position = at;
            f.WriteByte((byte)(b ^ 0x10));
        }
        File.SetLastWriteTimeUtc(block, time);
        string output = Path.Combine(dir, "bin", "model.bmodel");
        var e = Assert.ThrowsExactly<LlmBuildException>(() => Combine(built, dir, output));
        Assert.AreEqual(ErrorCodes.StaleCoefficientReference, e.Code, e.Message);
        StringAssert.Contains(e.Message, check);
        Assert.IsFalse(File.Exists(output), "nothing written from stale references");
        Assert.IsFalse(File.Exists(Path.Combine(dir, "bm1684x", "block_2.bmodel")));
        Assert.IsFalse(File.Exists(Path.Combine(dir, "bm1684x", "block_cache_2.bmodel")));
        Assert.IsTrue(File.Exists(Path.Combine(dir, "bm1684x", "block_1.bmodel")), "pieces of other weight files stay");
        Directory.Delete(dir, recursive: true);
    }

    [TestMethod]
    public void APieceCompiledAgainTakesItsPreviousHashesAndCombineChecksTheClaim()
    {
        var built = ExampleBuild.Get("w4bf16");
        string dir = BuildReferencing(built, "claims");
        var model = built.Model;
        var piece = model.Pieces.First(p => p.Name == "block_1");
        string mlir = Path.Combine(dir, "mlir", piece.Name, piece.Name + ".mlir");
        string weights = Path.Combine(dir, "weights", model.Owner(piece.WeightOwner!).FileName);
        string bmodel = Path.Combine(dir, "bm1684x", piece.Name + ".bmodel");
        byte[] first = File.ReadAllBytes(bmodel);
        // Compiled again over its own bmodel: same bytes (the claimed sha256 is the one it computed).
        CompileStage.RunReferencing(model, piece, mlir, weights, bmodel);
        CollectionAssert.AreEqual(first, File.ReadAllBytes(bmodel));

        // A previous bmodel whose claim is wrong: the piece takes it, combine refuses it and deletes the owner's pieces.
        var refs = PieceCoeffReferences.TryRead(bmodel)!;
        var wrong = refs with { Coefficients = refs.Coefficients.Select(c => c with { Sha256 = new string('0', 64) }).ToArray() };
        byte[] trailer = wrong.ToTrailer(), old = refs.ToTrailer();
        File.WriteAllBytes(bmodel, [.. first.AsSpan(0, first.Length - old.Length), .. trailer]);
        CompileStage.RunReferencing(model, piece, mlir, weights, bmodel);
        Assert.AreEqual(new string('0', 64), PieceCoeffReferences.TryRead(bmodel)!.Coefficients[0].Sha256, "the claim was taken, not recomputed");
        var e = Assert.ThrowsExactly<LlmBuildException>(() => Combine(built, dir));
        Assert.AreEqual(ErrorCodes.StaleCoefficientReference, e.Code, e.Message);
        Assert.IsFalse(File.Exists(bmodel), "the piece with the wrong claim is deleted");
        // Compiled again without a previous bmodel, it hashes the weights: combine gives the whole pieces' bytes.
        CompileStage.RunReferencing(model, piece, mlir, weights, bmodel);
        CompileStage.RunReferencing(model, model.Pieces.First(p => p.Name == "block_cache_1"), Path.Combine(dir, "mlir", "block_cache_1", "block_cache_1.mlir"), weights,
            Path.Combine(dir, "bm1684x", "block_cache_1.bmodel"));
        CollectionAssert.AreEqual(SHA256.HashData(File.ReadAllBytes(built.BModel)), SHA256.HashData(File.ReadAllBytes(Combine(built, dir))));
        Directory.Delete(dir, recursive: true);
    }

    [TestMethod]
    public void TheTrailerTextIsTheReflectionSerializersAndReadsBack()
    {
        // The trailer is written with compile-time JSON metadata; its text must stay what the run-time serializer wrote
        // (piece bmodels of an older build are read by this one).
        var references = new PieceCoeffReferences("../weights/block_0_top_weights.npz",
            [new WeightFileEntry("model.layers.0.mlp.down_proj.qweight", 0xDEADBEEF, 123456), new WeightFileEntry("k\"é", 7, 0)],
            [new CoeffReference("net0/stage0/coeff", 4096, new string('A', 64), [new CoeffSegment(0, "k\"é", 16, 32, 64, 3)])]);
        byte[] trailer = references.ToTrailer();
        byte[] reflection = System.Text.Json.JsonSerializer.SerializeToUtf8Bytes(references, new System.Text.Json.JsonSerializerOptions
        {
            WriteIndented = false, TypeInfoResolver = new System.Text.Json.Serialization.Metadata.DefaultJsonTypeInfoResolver(),
        });
        CollectionAssert.AreEqual(reflection, trailer[..reflection.Length]);
        Assert.AreEqual(reflection.Length + 16, trailer.Length);
        string path = Path.Combine(TestContext.TestRunDirectory ?? Path.GetTempPath(), $"trailer-{Guid.NewGuid():N}.bmodel");
        File.WriteAllBytes(path, [.. new byte[100], .. trailer]);
        var back = PieceCoeffReferences.TryRead(path)!;
        Assert.AreEqual(references.WeightFile, back.WeightFile);
        CollectionAssert.AreEqual(references.Entries.ToArray(), back.Entries.ToArray());
        Assert.AreEqual(references.Coefficients[0] with { Segments = [] }, back.Coefficients[0] with { Segments = [] });
        CollectionAssert.AreEqual(references.Coefficients[0].Segments.ToArray(), back.Coefficients[0].Segments.ToArray());
    }
}
