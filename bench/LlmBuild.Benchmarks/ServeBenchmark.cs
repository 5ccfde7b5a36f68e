using System.Diagnostics;
using System.Net;
using System.Text;
using System.Text.Json;
using LlmBuild.Core.Diagnostics;
using LlmBuild.Core.Plan;
using LlmBuild.Core.Stages;
using LlmBuild.Core.Runtime;
using LlmBuild.Core.Serving;
using LlmBuild.Core.Tokenization;
using LlmBuild.Core.Tokenization.Chat;

namespace LlmBuild.Benchmarks;

/// <summary>
/// `llmbuild serve` under load: the example (examples/tiny-qwen2) built at w4bf16 with Batch=4, served on loopback;
/// N clients each send R streaming greedy chat requests one after another. Prints requests/s, time to first token
/// (p50/p99), aggregate generated tokens/s, and checks every answer against the prompt's greedy answer computed
/// beforehand on the emulator alone (llmbuild run's path): complete, correct, no 5xx.
/// usage: serve [clients (default 8)] [requests per client (default 4)] [max_tokens (default 32)]
/// </summary>
public sealed class ServeBenchmark : IBenchmark
{
    private static readonly string[] Prompts =
    [
        "Once upon a time", "Tell me about the moon", "What is love?", "A fortune for today", "Why is the sky blue?",
        "Hello", "Say something wise", "What will happen tomorrow?",
    ];

    public string Name => "serve";
    public string Description => "llmbuild serve: N concurrent streaming clients vs the example at Batch=4 (requests/s, TTFT, tokens/s)";

    public int Run(string[] args)
    {
        int clients = args.Length > 0 ? int.Parse(args[0]) : 8;
        int perClient = args.Length > 1 ? int.Parse(args[1]) : 4;
        int maxTokens = args.Length > 2 ? int.Parse(args[2]) : 32;
        string example = Path.Combine(RuntimeBenchmark.FindRoot(), "examples", "tiny-qwen2", "checkpoint");
        var props = new Dictionary<string, string?>
        {
            ["ModelPath"] = example, ["SeqLength"] = "256", ["MaxInputLength"] = "128", ["Quantize"] = "w4bf16",
            ["QGroupSize"] = "64", ["Batch"] = "4", ["LlmModelName"] = "bench",
        };
        ResolvedModel model = ResolveStage.Resolve(props, new List<LlmBuildWarning>());
        string dir = Path.Combine(Path.GetTempPath(), "llmbuild-bench", "serve-" + Environment.ProcessId);
        Directory.CreateDirectory(dir);
        try
        {
            var configFiles = Directory.GetFiles(example).Where(f => !f.EndsWith(".safetensors", StringComparison.Ordinal)).ToArray();
            string bmodel = RuntimeBenchmark.Build(model, dir, configFiles);
            string config = Path.Combine(dir, "config");
            var expected = Prompts.ToDictionary(p => p, p => GreedyAnswer(bmodel, config, p, maxTokens));
            return Load(ServedModel.Load(bmodel, config), expected, clients, perClient, maxTokens).GetAwaiter().GetResult();
        }
        finally
        {
            Directory.Delete(dir, recursive: true);
        }
    }

    /// <summary>The prompt's answer from the emulator alone, as `llmbuild run -p PROMPT --max-new-tokens N` gives it.</summary>
    private static string GreedyAnswer(string bmodel, string config, string prompt, int maxTokens)
    {
        using var emulator = LlmEmulator.Load(bmodel, config);
        var session = new ChatSession(Tokenizer.Load(config), ChatTemplate.Load(config), new EmulatorTokenGenerator(emulator, new TokenSampler(null)),
            new ChatSessionOptions { SeqLength = emulator.SeqLength, MaxInputLength = emulator.PrefillLength, MaxNewTokens = maxTokens });
        return session.Ask(prompt).Text;
    }

    private sealed record Outcome(HttpStatusCode Status, string Text, double FirstTokenSeconds, int CompletionTokens, bool Done);

    private static async Task<int> Load(ServedModel served, Dictionary<string, string> expected, int clients, int perClient, int maxTokens)
    {
        await using var server = await OpenAiServer.StartAsync(served, new ServeOptions { Port = 0, QueueCapacity = clients * perClient });
        using var http = new HttpClient { BaseAddress = server.Address, Timeout = TimeSpan.FromMinutes(5) };
        await Request(http, Prompts[0], maxTokens); // warm up (JIT, the first Kestrel connection)
        var outcomes = new List<(string Prompt, Outcome Outcome)>();
        var clock = Stopwatch.StartNew();
        await Task.WhenAll(Enumerable.Range(0, clients).Select(c => Task.Run(async () =>
        {
            for (int r = 0; r < perClient; r++)
            {
                string prompt = Prompts[(c * perClient + r) % Prompts.Length];
                var outcome = await Request(http, prompt, maxTokens);
                lock (outcomes) outcomes.Add((prompt, outcome));
            }
        })));
        double seconds = clock.Elapsed.TotalSeconds;

        int ok = outcomes.Count(o => o.Outcome.Status == HttpStatusCode.OK);
        int serverErrors = outcomes.Count(o => (int)o.Outcome.Status >= 500);
        int complete = outcomes.Count(o => o.Outcome.Done);
        int correct = outcomes.Count(o => o.Outcome.Done && o.Outcome.Text == expected[o.Prompt]);
        var firstToken = outcomes.Where(o => o.Outcome.Done).Select(o => o.Outcome.FirstTokenSeconds * 1000).Order().ToArray();
        int tokens = outcomes.Sum(o => o.Outcome.CompletionTokens);
        Console.WriteLine($"{Environment.ProcessorCount} cores; tiny-qwen2 (example) w4bf16 g64, SeqLength 256, MaxInputLength 128, Batch=4 ({server.Engine.Slots} slots)");
        Console.WriteLine($"  {clients} concurrent streaming clients x {perClient} requests, greedy, max_tokens {maxTokens}: {outcomes.Count} requests in {seconds:F2} s");
        Console.WriteLine($"  requests/s {outcomes.Count / seconds:F2}; time to first token p50 {Percentile(firstToken, 0.50):F0} ms, p99 {Percentile(firstToken, 0.99):F0} ms");
        Console.WriteLine($"  aggregate {tokens / seconds:F1} generated tokens/s ({tokens} tokens)");
        var counters = server.Engine.Counters;
        Console.WriteLine($"  engine: {counters.Prefills} prefills ({1000 * counters.PrefillTime.TotalSeconds / counters.Prefills:F0} ms each, {counters.PrefillTime.TotalSeconds:F1} s), "
            + $"{counters.DecodeSteps} decode steps ({1000 * counters.DecodeTime.TotalSeconds / counters.DecodeSteps:F1} ms each, {counters.DecodeTime.TotalSeconds:F1} s) carrying {(double)counters.DecodedTokens / counters.DecodeSteps:F2} sequences on average");
        Console.WriteLine($"  200: {ok}, 5xx: {serverErrors}, complete ([DONE]): {complete}, equal to the emulator's greedy answer: {correct}");
        return ok == outcomes.Count && correct == outcomes.Count ? 0 : 1;
    }

    private static double Percentile(double[] sorted, double p) =>
        sorted.Length == 0 ? double.NaN : sorted[Math.Min(sorted.Length - 1, (int)Math.Ceiling(p * sorted.Length) - 1)];

    /// <summary>One streaming request, read event by event: the text, when its first piece came, the usage, and [DONE].</summary>
    private static async Task<Outcome> Request(HttpClient http, string prompt, int maxTokens)
    {
        string body = JsonSerializer.Serialize(new
        {
            messages = new[] { new { role = "user", content = prompt } }, stream = true, max_tokens = maxTokens, temperature = 0,
            stream_options = new { include_usage = true },
        });
        var clock = Stopwatch.StartNew();
        using var request = new HttpRequestMessage(HttpMethod.Post, "/v1/chat/completions") { Content = new StringContent(body, Encoding.UTF8, "application/json") };
        using var response = await http.SendAsync(request, HttpCompletionOption.ResponseHeadersRead);
        if (response.StatusCode != HttpStatusCode.OK) return new Outcome(response.StatusCode, "", 0, 0, false);
        using var reader = new StreamReader(await response.Content.ReadAsStreamAsync());
        var text = new StringBuilder();
        double firstToken = 0;
        int completionTokens = 0;
        while (await reader.ReadLineAsync() is { } line)
        {
            if (!line.StartsWith("data: ", StringComparison.Ordinal)) continue;
            string data = line["data: ".Length..];
            if (data == "[DONE]") return new Outcome(response.StatusCode, text.ToString(), firstToken, completionTokens, true);
            var chunk = JsonDocument.Parse(data).RootElement;
            if (chunk.TryGetProperty("usage", out var usage) && usage.ValueKind == JsonValueKind.Object)
                completionTokens = usage.GetProperty("completion_tokens").GetInt32();
            if (chunk.GetProperty("choices") is { ValueKind: JsonValueKind.Array } choices && choices.GetArrayLength() > 0
                && choices[0].GetProperty("delta").TryGetProperty("content", out var content) && content.GetString() is { Length: > 0 } piece)
            {
                if (text.Length == 0) firstToken = clock.Elapsed.TotalSeconds;
                text.Append(piece);
            }
        }
        return new Outcome(response.StatusCode, text.ToString(), firstToken, completionTokens, false);
    }
}
