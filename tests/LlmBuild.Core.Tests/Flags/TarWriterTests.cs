using System.Diagnostics;
using LlmBuild.Core.IO;

namespace LlmBuild.Core.Tests.Flags;

/// <summary>The tar writer's output, read back by python's tarfile (an independent reader) and by <see cref="TarReader"/>.</summary>
[TestClass]
public sealed class TarWriterTests
{
    [TestMethod]
    [DataRow(long.MaxValue, DisplayName = "ustar sizes")]
    [DataRow(100L, DisplayName = "pax size records (as members over 8 GiB get)")]
    public void PythonReadsWhatTheWriterWrites(long paxAbove)
    {
        string dir = Path.Combine(Path.GetTempPath(), "tar-" + Guid.NewGuid().ToString("N"));
        Directory.CreateDirectory(dir);
        string path = Path.Combine(dir, "t.tar");
        var contents = new Dictionary<string, byte[]>
        {
            ["a.json"] = "{\"x\": 1}\n"u8.ToArray(),
            ["empty.bin"] = [],
            ["block.bmodel"] = Enumerable.Range(0, 512).Select(i => (byte)i).ToArray(),
            ["odd_size.bmodel"] = Enumerable.Range(0, 1333).Select(i => (byte)(i * 7)).ToArray(),
        };
        using (var s = File.Create(path))
        {
            var tar = new TarWriter(s, paxAbove);
            foreach (var (name, bytes) in contents) tar.Add(name, bytes);
            tar.Finish();
        }
        Assert.AreEqual(0, new FileInfo(path).Length % TarWriter.RecordSize);
        var members = TarReader.List(path);
        CollectionAssert.AreEqual(contents.Keys.ToArray(), members.Select(m => m.Name).ToArray());
        CollectionAssert.AreEqual(contents.Values.Select(v => (long)v.Length).ToArray(), members.Select(m => m.Size).ToArray());

        var psi = new ProcessStartInfo("python3") { RedirectStandardOutput = true, RedirectStandardError = true };
        foreach (string a in new[] { "-c", "import sys, tarfile, hashlib\nwith tarfile.open(sys.argv[1]) as t:\n    for m in t.getmembers(): print(m.name, m.size, hashlib.sha256(t.extractfile(m).read()).hexdigest(), m.pax_headers.get('size', '-'))", path })
            psi.ArgumentList.Add(a);
        using var p = Process.Start(psi)!;
        string[] lines = p.StandardOutput.ReadToEnd().Split('\n', StringSplitOptions.RemoveEmptyEntries);
        p.WaitForExit();
        Assert.AreEqual(0, p.ExitCode, p.StandardError.ReadToEnd());
        int i = 0;
        foreach (var (name, bytes) in contents)
        {
            string sha = Convert.ToHexStringLower(System.Security.Cryptography.SHA256.HashData(bytes));
            string pax = bytes.Length > paxAbove ? bytes.Length.ToString() : "-";
            Assert.AreEqual($"{name} {bytes.Length} {sha} {pax}", lines[i++]);
        }
        Directory.Delete(dir, recursive: true);
    }
}
