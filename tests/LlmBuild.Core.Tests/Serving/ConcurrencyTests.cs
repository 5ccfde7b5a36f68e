using System.Net;
using System.Text;
using System.Text.Json;
using LlmBuild.Core.Runtime;
using LlmBuild.Core.Serving;

namespace LlmBuild.Core.Tests.Serving;

/// <summary>Many clients on one model: continuous batching over Batch=4, arrival order and a bounded queue at Batch=1, disconnects.</summary>
[TestClass]
public sealed class ConcurrencyTests
{
    private static readonly string[] Prompts = ["Once upon a time", "Tell me about the moon", "What is love?", "A fortune for today", "Why is the sky blue?", "Hello"];

    private static StringContent Json(object body) => new(JsonSerializer.Serialize(body), Encoding.UTF8, "application/json");

    private static async Task<string> StreamedAnswer(HttpClient http, string prompt, int maxTokens)
    {
        using var response = await http.PostAsync("/v1/chat/completions",
            Json(new { messages = new[] { new { role = "user", content = prompt } }, stream = true, max_tokens = maxTokens, temperature = 0 }));
        Assert.AreEqual(HttpStatusCode.OK, response.StatusCode);
        var text = new StringBuilder();
        foreach (string e in (await response.Content.ReadAsStringAsync()).Split("\n\n", StringSplitOptions.RemoveEmptyEntries))
        {
            if (e == "data: [DONE]") return text.ToString();
            var delta = JsonDocument.Parse(e["data: ".Length..]).RootElement.GetProperty("choices")[0].GetProperty("delta");
            if (delta.TryGetProperty("content", out var content)) text.Append(content.GetString());
        }
        throw new AssertFailedException("the stream did not end with [DONE]");
    }

    [TestMethod]
    public async Task ConcurrentStreamsOnABatch4BuildDecodeTogetherAndMatchTheirAloneAnswers()
    {
        await using var server = await ServingTestServer.StartAsync(batch: 4);
        using var http = ServingTestServer.Http(server);
        int mostBusy = 0;
        using var watching = new CancellationTokenSource();
        var watcher = Task.Run(async () =>
        {
            while (!watching.IsCancellationRequested)
            {
                mostBusy = Math.Max(mostBusy, server.Engine.Load.Busy);
                await Task.Delay(2);
            }
        });
        var answers = await Task.WhenAll(Prompts.Select(p => StreamedAnswer(http, p, 10)));
        watching.Cancel();
        await watcher;
        Assert.IsTrue(mostBusy >= 2, $"at most {mostBusy} sequence(s) were decoding at once");
        for (int i = 0; i < Prompts.Length; i++)
            Assert.AreEqual(ServingTestServer.RunAnswer(4, Prompts[i], 10).Text, answers[i], Prompts[i]);
    }

    [TestMethod]
    public async Task FullQueueIsA429AndADisconnectFreesTheSlot()
    {
        await using var server = await ServingTestServer.StartAsync(batch: 1, queue: 1);
        using var http = ServingTestServer.Http(server);
        // A holds the only slot (a stream only SeqLength ends, abandoned after its first event); B waits in the queue;
        // C finds the queue full.
        var a = new HttpRequestMessage(HttpMethod.Post, "/v1/chat/completions")
        {
            Content = Json(new { messages = new[] { new { role = "user", content = "Once upon a time" } }, stream = true, temperature = 0, ignore_eos = true }),
        };
        var aResponse = await http.SendAsync(a, HttpCompletionOption.ResponseHeadersRead);
        var aStream = await aResponse.Content.ReadAsStreamAsync();
        await aStream.ReadExactlyAsync(new byte[8]);
        for (int i = 0; i < 1000 && server.Engine.Load != (1, 0); i++) await Task.Delay(5);
        var b = http.PostAsync("/v1/chat/completions", Json(new { messages = new[] { new { role = "user", content = "Hello" } }, max_tokens = 3, temperature = 0 }));
        for (int i = 0; i < 1000 && server.Engine.Load != (1, 1); i++) await Task.Delay(5);
        Assert.AreEqual((1, 1), server.Engine.Load, "A decodes, B waits");
        var c = await http.PostAsync("/v1/chat/completions", Json(new { messages = new[] { new { role = "user", content = "Hi" } }, max_tokens = 3 }));
        Assert.AreEqual(HttpStatusCode.TooManyRequests, c.StatusCode);
        Assert.IsTrue(c.Headers.RetryAfter?.Delta >= TimeSpan.FromSeconds(1), "Retry-After says when to come back");
        StringAssert.Contains(await c.Content.ReadAsStringAsync(), "LLMB0806");

        aResponse.Dispose(); // the client goes away mid-stream
        var bResponse = await b;
        Assert.AreEqual(HttpStatusCode.OK, bResponse.StatusCode, await bResponse.Content.ReadAsStringAsync());
        Assert.AreEqual((0, 0), server.Engine.Load);
    }

    [TestMethod]
    public void Batch1EngineServesInArrivalOrderStopsAtSeqLengthAndCancelEndsAGenerationAtOnce()
    {
        var built = ServingTestServer.Build(1);
        using var emulator = LlmEmulator.Load(built.BModel, built.ConfigDir);
        using var engine = new BatchingEngine(emulator, new HashSet<int>(), queueCapacity: 8);
        int[] prompt = [1000, 2000, 3000];
        var finished = new List<int>();
        var generations = Enumerable.Range(0, 3).Select(_ => new Generation(prompt, new GenerationSettings(null, 0, 4))).ToArray();
        var readers = generations.Select((g, i) => Task.Run(async () =>
        {
            await foreach (int _ in g.Tokens.ReadAllAsync()) { }
            lock (finished) finished.Add(i);
        })).ToArray();
        foreach (var g in generations) engine.Submit(g);
        Task.WaitAll(readers);
        CollectionAssert.AreEqual(new[] { 0, 1, 2 }, finished);
        Assert.IsTrue(generations.All(g => g.End == GenerationEnd.MaxTokens && g.Generated == 4));

        // No end-of-sequence ids and no max_tokens: SeqLength ends the generation, prompt plus answer filling it.
        var full = new Generation(prompt, new GenerationSettings(null, 0, null));
        engine.Submit(full);
        var all = Task.Run(async () => { await foreach (int _ in full.Tokens.ReadAllAsync()) { } });
        Assert.IsTrue(all.Wait(30_000));
        Assert.AreEqual(GenerationEnd.SeqLength, full.End);
        Assert.AreEqual(emulator.SeqLength - prompt.Length, full.Generated);

        // The same, cancelled after its first token: it ends at once.
        var endless = new Generation(prompt, new GenerationSettings(null, 0, null));
        engine.Submit(endless);
        Assert.IsTrue(endless.Tokens.WaitToReadAsync().AsTask().Wait(10_000));
        endless.Cancel();
        var drained = Task.Run(async () => { await foreach (int _ in endless.Tokens.ReadAllAsync()) { } });
        Assert.IsTrue(drained.Wait(10_000));
        Assert.AreEqual(GenerationEnd.Cancelled, endless.End);
        Assert.IsTrue(endless.Generated < emulator.SeqLength - prompt.Length, $"{endless.Generated} tokens");
    }
}
