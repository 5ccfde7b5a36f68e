using System.Diagnostics;
using System.Security.Cryptography;
using System.Text.Json.Nodes;
using LlmBuild.Core.BModel;
using LlmBuild.Core.IO;
using LlmBuild.Tests;

namespace LlmBuild.Core.Tests.BModel;

/// <summary>
/// A combined bmodel keeps its coefficients first, at a file offset only the flatbuffer's size moves, so a combine of
/// pieces whose shapes and commands changed but whose coefficients did not (a SeqLength change) rewrites the existing
/// output around its coefficient region, in place and moved aside meanwhile — and must give the bytes a cold combine
/// gives, whether it ran to the end or was stopped at any step.
/// </summary>
[TestClass]
[DoNotParallelize] // the rewrite probe is process-wide
public sealed class CombineRewriteTests
{
    private string _dir = "";

    [TestInitialize]
    public void Init() => Directory.CreateDirectory(_dir = Path.Combine(Path.GetTempPath(), $"llmb-rewrite-{Guid.NewGuid():N}"));

    [TestCleanup]
    public void Cleanup()
    {
        BModelWriter.RewriteProbe = null;
        Directory.Delete(_dir, true);
    }

    /// <summary>The pieces of a two-block model at sequence length <paramref name="seq"/>; <paramref name="seed"/> picks the weights.</summary>
    private string[] Pieces(int seq, int seed = 0)
    {
        string dir = Path.Combine(_dir, $"pieces-{seq}-{seed}");
        Directory.CreateDirectory(dir);
        (string Name, int Seq, int Weights, int AddrMode)[] pieces =
        [
            ("block_0", seq, 1 + seed, 0), ("block_cache_0", seq + 1, 1 + seed, 1),
            ("block_1", seq, 2 + seed, 0), ("block_cache_1", seq + 1, 2 + seed, 1), ("lm_head", 1, 3 + seed, 0),
        ];
        return pieces.Select(p =>
        {
            string path = Path.Combine(dir, p.Name + ".bmodel");
            var (model, blob) = BModelSamples.Piece(p.Name, p.Seq, p.Weights, addrMode: p.AddrMode);
            BModelWriter.WriteFile(path, model, blob);
            return path;
        }).ToArray();
    }

    private string Cold(string[] pieces, string name)
    {
        string path = Path.Combine(_dir, "cold", name);
        BModelCombiner.Combine(pieces, path);
        return path;
    }

    /// <summary>The inode number of the file at <paramref name="path"/> (coreutils' stat): the same after a change in place, another after a rename over it.</summary>
    private static string Inode(string path)
    {
        var psi = new ProcessStartInfo("stat", ["-c", "%i", path]) { RedirectStandardOutput = true };
        using var p = Process.Start(psi)!;
        string inode = p.StandardOutput.ReadToEnd().Trim();
        p.WaitForExit();
        Assert.AreEqual(0, p.ExitCode);
        return inode;
    }

    [TestMethod]
    public void SeqLengthChangeRewritesInPlaceToTheColdBytes()
    {
        string output = Path.Combine(_dir, "bin", "model.bmodel");
        BModelCombiner.Combine(Pieces(16), output);
        byte[] before = File.ReadAllBytes(output);
        string inode = Inode(output);

        var result = BModelCombiner.Combine(Pieces(32), output);

        byte[] cold = File.ReadAllBytes(Cold(Pieces(32), "model.bmodel"));
        CollectionAssert.AreEqual(cold, File.ReadAllBytes(output), "the rewritten bmodel equals a cold combine at the new length");
        Assert.AreEqual(inode, Inode(output), "rewritten in place");
        CollectionAssert.AreNotEqual(before, cold);
        Assert.AreEqual(cold.LongLength, result.OutputBytes);
        var (start, end) = CoefficientRegion(output);
        Assert.AreEqual(0, start % BModelCombiner.CoefficientRegionAlignment, "the coefficient region starts at an aligned file offset");
        CollectionAssert.AreEqual(before[(int)start..(int)end], cold[(int)start..(int)end], "same coefficient region at the same offset");
        Assert.IsFalse(Directory.EnumerateFiles(Path.GetDirectoryName(output)!, "*.tmp").Any(), "no temporary left");
    }

    [TestMethod]
    public void ChangedCoefficientsAreWrittenAnew()
    {
        string output = Path.Combine(_dir, "bin", "model.bmodel");
        BModelCombiner.Combine(Pieces(16), output);
        string inode = Inode(output);

        BModelCombiner.Combine(Pieces(16, seed: 5), output);

        CollectionAssert.AreEqual(File.ReadAllBytes(Cold(Pieces(16, seed: 5), "model.bmodel")), File.ReadAllBytes(output));
        Assert.AreNotEqual(inode, Inode(output), "a new file was renamed over the old one");
    }

    [TestMethod]
    public void AFileWithAnotherNameIsNeverChangedInPlace()
    {
        string output = Path.Combine(_dir, "bin", "model.bmodel"), other = Path.Combine(_dir, "deployed.bmodel");
        BModelCombiner.Combine(Pieces(16), output);
        byte[] before = File.ReadAllBytes(output);
        using (var ln = Process.Start("ln", [output, other])!) ln.WaitForExit();
        Assert.AreEqual(2, HardLinks.Count(output));

        BModelCombiner.Combine(Pieces(32), output);

        CollectionAssert.AreEqual(File.ReadAllBytes(Cold(Pieces(32), "model.bmodel")), File.ReadAllBytes(output));
        CollectionAssert.AreEqual(before, File.ReadAllBytes(other), "the other name still has the old model");
        Assert.AreEqual(1, HardLinks.Count(output));
    }

    [TestMethod]
    public void NonZeroGapInTheCoefficientRegionIsWrittenAnew()
    {
        string output = Path.Combine(_dir, "bin", "model.bmodel");
        BModelCombiner.Combine(Pieces(16), output);
        // Byte 1000 of the region is alignment padding after the first coefficient blob (1000 bytes).
        var (start, _) = CoefficientRegion(output);
        using (var f = new FileStream(output, FileMode.Open, FileAccess.Write)) { f.Position = start + 1000; f.WriteByte(0x5A); }
        string inode = Inode(output);

        BModelCombiner.Combine(Pieces(32), output);

        CollectionAssert.AreEqual(File.ReadAllBytes(Cold(Pieces(32), "model.bmodel")), File.ReadAllBytes(output));
        Assert.AreNotEqual(inode, Inode(output), "written anew");
    }

    /// <summary>A reader that has the bmodel open (the emulator, `llmbuild serve`) keeps seeing the file it opened.</summary>
    [TestMethod]
    public void AnOpenBModelIsNotChangedUnderItsReader()
    {
        string output = Path.Combine(_dir, "bin", "model.bmodel");
        BModelCombiner.Combine(Pieces(16), output);
        using (var reader = BModelReader.Read(output))
        {
            var cmd = reader.Model.Nets[0].Stages[0].CmdGroups[0].BinaryBdc!.Value;
            byte[] commands = reader.ReadBinary(cmd);
            BModelCombiner.Combine(Pieces(32), output);
            CollectionAssert.AreEqual(commands, reader.ReadBinary(cmd), "the open reader's commands did not change under it");
            reader.VerifyCheckCodes();
        }
        CollectionAssert.AreEqual(File.ReadAllBytes(Cold(Pieces(32), "model.bmodel")), File.ReadAllBytes(output));
    }

    /// <summary>
    /// What a kill -9 at each step of the in-place rewrite leaves — no file at the path, the moved-aside file under a
    /// dead process's temporary name, part rewritten — and that the next combine gives the cold build's bytes.
    /// </summary>
    [TestMethod]
    [DataRow("moved")]
    [DataRow("head")]
    [DataRow("tail")]
    [DataRow("truncated")]
    public void RewriteStoppedAtAnyStepResumesToTheColdBytes(string step)
    {
        string bin = Path.Combine(_dir, "bin"), output = Path.Combine(bin, "model.bmodel");
        BModelCombiner.Combine(Pieces(16), output);
        int deadPid = DeadProcessId();
        BModelWriter.RewriteProbe = (stream, at) =>
        {
            if (at != step) return;
            // The moved-aside file as the killed writer leaves it (copied through its own handle: it holds the file's lock).
            stream.Flush();
            stream.Position = 0;
            using (var left = File.Create(Path.Combine(bin, $".model.bmodel.{deadPid}.{Guid.NewGuid():N}.tmp"))) stream.CopyTo(left);
            throw new OperationCanceledException("killed");
        };
        Assert.ThrowsExactly<OperationCanceledException>(() => BModelCombiner.Combine(Pieces(32), output));
        BModelWriter.RewriteProbe = null;
        Assert.IsFalse(File.Exists(output), $"stopped at '{step}': no bmodel at the path, never a half-rewritten one");

        AtomicFile.DeleteStaleTemporaries(bin); // what the next build does first
        BModelCombiner.Combine(Pieces(32), output);

        CollectionAssert.AreEqual(File.ReadAllBytes(Cold(Pieces(32), "model.bmodel")), File.ReadAllBytes(output));
        Assert.IsFalse(Directory.EnumerateFiles(bin, "*.tmp").Any(), "the killed rewrite's temporary is gone");
    }

    /// <summary>Debian's flatc decodes the rewritten bmodel; every binary lies in the blob and every coefficient blob, read straight from the file, matches its check code.</summary>
    [TestMethod]
    public void FlatcDecodesTheRewrittenModel()
    {
        string flatc = ExternalDecoders.Flatc();
        string output = Path.Combine(_dir, "bin", "model.bmodel");
        BModelCombiner.Combine(Pieces(16), output);
        BModelCombiner.Combine(Pieces(32), output);

        byte[] file = File.ReadAllBytes(output);
        var json = Decode(flatc, file);
        long blobStart = 64 + BitConverter.ToUInt32(file, 8), blobSize = file.Length - blobStart;
        Assert.AreEqual((uint)blobSize, BitConverter.ToUInt32(file, 12), "binary_size");
        int coefficients = 0;
        foreach (var net in json["net"]!.AsArray())
            foreach (var stage in net!["parameter"]!.AsArray())
            {
                foreach (var input in stage!["input_tensor"]!.AsArray().Where(t => (string)t!["name"]! == "input_states"))
                    Assert.AreEqual(net["name"]!.ToString().StartsWith("block_cache", StringComparison.Ordinal) ? 33 : net["name"]!.ToString() == "lm_head" ? 1 : 32,
                        (int)input!["shape"]![0]!["dim"]![1]!, "the new shapes");
                foreach (var cmd in stage["cmd_group"]!.AsArray())
                    foreach (string field in new[] { "binary_bdc", "binary_gdma" })
                        Assert.IsTrue((long)cmd![field]!["start"]! + (long)cmd[field]!["size"]! <= blobSize, field);
                var coeff = stage["coeff_mem"]!;
                long start = (long)coeff["binary_coeff"]!["start"]!, size = (long)coeff["binary_coeff"]!["size"]!;
                byte[] checkCode = coeff["check_code"]!.AsArray().Select(b => (byte)(int)b!).ToArray();
                CollectionAssert.AreEqual(checkCode, SHA256.HashData(file.AsSpan((int)(blobStart + start), (int)size)), $"{net["name"]} coefficients");
                coefficients++;
            }
        Assert.AreEqual(5, coefficients);
    }

    private JsonNode Decode(string flatc, byte[] file)
    {
        string dir = Path.Combine(_dir, "flatc");
        Directory.CreateDirectory(dir);
        File.WriteAllText(Path.Combine(dir, "bmodel.fbs"), BModelSchema.Text);
        File.WriteAllBytes(Path.Combine(dir, "model.bin"), file.AsSpan(64, (int)BitConverter.ToUInt32(file, 8)).ToArray());
        var psi = new ProcessStartInfo(flatc) { WorkingDirectory = dir, RedirectStandardOutput = true, RedirectStandardError = true };
        foreach (string a in new[] { "--json", "--raw-binary", "--strict-json", "--defaults-json", "-o", dir, Path.Combine(dir, "bmodel.fbs"), "--", Path.Combine(dir, "model.bin") })
            psi.ArgumentList.Add(a);
        using var p = Process.Start(psi)!;
        string log = p.StandardOutput.ReadToEnd() + p.StandardError.ReadToEnd();
        p.WaitForExit();
        Assert.AreEqual(0, p.ExitCode, log);
        return JsonNode.Parse(File.ReadAllText(Path.Combine(dir, "model.json")))!;
    }

    /// <summary>File offsets of the first coefficient byte and the end of the last (the header read by hand).</summary>
    private static (long Start, long End) CoefficientRegion(string path)
    {
        byte[] file = File.ReadAllBytes(path);
        long blobStart = 64 + BitConverter.ToUInt32(file, 8);
        using var c = BModelReader.Read(path);
        var coeffs = c.Model.Nets.SelectMany(n => n.Stages).Select(s => s.CoeffMem!.BinaryCoeff!.Value).ToArray();
        return (blobStart + (long)coeffs.Min(b => b.Start), blobStart + (long)coeffs.Max(b => b.Start + b.Size));
    }

    private static int DeadProcessId()
    {
        using var p = Process.Start("true")!;
        p.WaitForExit();
        return p.Id;
    }
}
