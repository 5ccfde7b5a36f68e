using System.Diagnostics;
using System.Text;
using LlmBuild.Core.Tokenization;

namespace LlmBuild.Benchmarks;

/// <summary>Tokenizer load time and encode/decode speed on ~10 KB of mixed text (English, code, CJK, emoji),
/// for the byte-level (Qwen2.5) and SentencePiece-style (Llama-2) tokenizers of tests/fixtures.</summary>
public sealed class TokenizerBenchmark : IBenchmark
{
    public string Name => "tokenizer";
    public string Description => "Load, encode and decode ~10 KB of text with Qwen2.5 and Llama-2 tokenizers";

    public int Run(string[] args)
    {
        string root = FindRoot();
        var sb = new StringBuilder();
        var random = new Random(1);
        string[] parts = ["The quick brown fox jumps over the lazy dog. ", "for (int i = 0; i < n; i++) { sum += a[i]; }\n",
            "今天天气很好，我们去公园散步吧。", "🙂 emoji 👍🏽 ", "Numbers 2026-11-21 3.14159\n", "    indented\tcode\n\n"];
        while (Encoding.UTF8.GetByteCount(sb.ToString()) < 10_000) sb.Append(parts[random.Next(parts.Length)]);
        string text = sb.ToString();
        foreach (var fixture in new[] { "qwen2.5-7b-instruct", "llama2-7b-chat" })
        {
            var load = Stopwatch.StartNew();
            var tokenizer = Tokenizer.Load(Path.Combine(root, "tests", "fixtures", fixture));
            load.Stop();
            int[] ids = tokenizer.Encode(text); // warm-up (JIT, regex compilation)
            var cold = MeasureMs(() => Tokenizer.Load(Path.Combine(root, "tests", "fixtures", fixture)).Encode(text), 1);
            double encode = MeasureMs(() => tokenizer.Encode(text), 50);
            double decode = MeasureMs(() => tokenizer.Decode(ids), 50);
            Console.WriteLine($"{fixture,-22} load {load.Elapsed.TotalMilliseconds,7:F0} ms | {Encoding.UTF8.GetByteCount(text)} B -> {ids.Length} tokens | " +
                $"encode {encode,6:F2} ms (cache warm), load+first encode {cold,6:F0} ms | decode {decode,6:F2} ms");
        }
        return 0;
    }

    private static double MeasureMs(Action action, int repeats)
    {
        var watch = Stopwatch.StartNew();
        for (int i = 0; i < repeats; i++) action();
        return watch.Elapsed.TotalMilliseconds / repeats;
    }

    private static string FindRoot()
    {
        for (var dir = new DirectoryInfo(AppContext.BaseDirectory); dir is not null; dir = dir.Parent)
            if (Directory.Exists(Path.Combine(dir.FullName, "tests", "fixtures"))) return dir.FullName;
        return Directory.GetCurrentDirectory();
    }
}
