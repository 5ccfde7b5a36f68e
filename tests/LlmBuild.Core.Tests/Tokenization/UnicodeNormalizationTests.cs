using System.Diagnostics;
using System.Text;
using System.Text.Json;
using LlmBuild.Core.Tokenization.Unicode;
using LlmBuild.Tests;

namespace LlmBuild.Core.Tests.Tokenization;

/// <summary>Our NFC/NFD/NFKC/NFKD against Python's unicodedata.normalize on random strings of characters that
/// decompose, compose, reorder or are excluded from composition.</summary>
[TestClass]
public sealed class UnicodeNormalizationTests
{
    [TestMethod]
    public void SpotChecks()
    {
        Assert.AreEqual("\u00E9", UnicodeNormalization.Normalize("e\u0301", UnicodeForm.NFC));
        Assert.AreEqual("\uAC01", UnicodeNormalization.Normalize("\u1100\u1161\u11A8", UnicodeForm.NFC));
        Assert.AreEqual("\u00C5", UnicodeNormalization.Normalize("\u212B", UnicodeForm.NFC));
        Assert.AreEqual("a\u0316\u0301", UnicodeNormalization.Normalize("a\u0301\u0316", UnicodeForm.NFD));
        Assert.AreEqual("\uFB01", UnicodeNormalization.Normalize("\uFB01", UnicodeForm.NFC));
        Assert.AreEqual("fi", UnicodeNormalization.Normalize("\uFB01", UnicodeForm.NFKC));
    }

    [TestMethod]
    public void MatchesPythonOnRandomStrings()
    {
        int[][] ranges = [[0x41, 0x7A], [0xC0, 0x17F], [0x300, 0x36F], [0x1E00, 0x1EFF], [0x1F00, 0x1FFF], [0x1100, 0x1112],
            [0x1161, 0x1175], [0x11A8, 0x11C2], [0xAC00, 0xAC40], [0x0900, 0x0970], [0x2000, 0x2100], [0xFB00, 0xFB4F],
            [0x3300, 0x3310], [0xFF01, 0xFF5E], [0x1D15E, 0x1D164], [0x0F70, 0x0F82], [0x0591, 0x05C7]];
        var random = new Random(7);
        var texts = new List<string>();
        for (int i = 0; i < 1500; i++)
        {
            var sb = new StringBuilder();
            int n = random.Next(1, 8);
            for (int k = 0; k < n; k++)
            {
                var r = ranges[random.Next(ranges.Length)];
                sb.Append(char.ConvertFromUtf32(random.Next(r[0], r[1] + 1)));
            }
            texts.Add(sb.ToString());
        }
        string input = Path.GetTempFileName();
        try
        {
            File.WriteAllText(input, JsonSerializer.Serialize(texts));
            var start = new ProcessStartInfo(ExternalDecoders.Python3()) { RedirectStandardOutput = true, RedirectStandardError = true };
            start.ArgumentList.Add("-c");
            start.ArgumentList.Add("import json,sys,unicodedata as u; t=json.load(open(sys.argv[1])); " +
                "print(json.dumps([[u.normalize(f,s) for f in ('NFC','NFD','NFKC','NFKD')] for s in t]))");
            start.ArgumentList.Add(input);
            using var process = Process.Start(start)!;
            string stdout = process.StandardOutput.ReadToEnd();
            process.WaitForExit();
            Assert.AreEqual(0, process.ExitCode, process.StandardError.ReadToEnd());
            var expected = JsonSerializer.Deserialize<string[][]>(stdout)!;
            UnicodeForm[] forms = [UnicodeForm.NFC, UnicodeForm.NFD, UnicodeForm.NFKC, UnicodeForm.NFKD];
            int failures = 0;
            string first = "";
            for (int i = 0; i < texts.Count; i++)
                for (int f = 0; f < 4; f++)
                {
                    string actual = UnicodeNormalization.Normalize(texts[i], forms[f]);
                    if (actual == expected[i][f]) continue;
                    if (failures++ == 0) first = $"{forms[f]} of {JsonSerializer.Serialize(texts[i])}: python {JsonSerializer.Serialize(expected[i][f])}, ours {JsonSerializer.Serialize(actual)}";
                }
            Assert.AreEqual(0, failures, first);
        }
        finally
        {
            File.Delete(input);
        }
    }
}
