using System.Net;
using System.Text;
using System.Text.Json;
using LlmBuild.Core.Serving;

namespace LlmBuild.Core.Tests.Serving;

/// <summary>The wire format below any client: server-sent-event framing, error objects, limits, the other endpoints.</summary>
[TestClass]
public sealed class RawHttpTests
{
    private static OpenAiServer _server = null!;
    private static HttpClient _http = null!;

    [ClassInitialize]
    public static async Task Start(TestContext _)
    {
        _server = await ServingTestServer.StartAsync();
        _http = ServingTestServer.Http(_server);
    }

    [ClassCleanup]
    public static async Task Stop()
    {
        _http.Dispose();
        await _server.DisposeAsync();
    }

    private static async Task<(HttpStatusCode Status, string Body, HttpResponseMessage Response)> Post(string path, string json)
    {
        var response = await _http.PostAsync(path, new StringContent(json, Encoding.UTF8, "application/json"));
        return (response.StatusCode, await response.Content.ReadAsStringAsync(), response);
    }

    private static JsonElement Error(string body)
    {
        var error = JsonDocument.Parse(body).RootElement.GetProperty("error");
        Assert.IsTrue(error.TryGetProperty("message", out var message) && message.GetString()!.Length > 0, body);
        Assert.IsTrue(error.TryGetProperty("type", out _), body);
        Assert.IsTrue(error.TryGetProperty("param", out _), body);
        return error;
    }

    [TestMethod]
    public async Task StreamIsServerSentEventsEndingInDone()
    {
        var (status, body, response) = await Post("/v1/chat/completions",
            """{"model":"tiny-qwen2","messages":[{"role":"user","content":"Once upon a time"}],"stream":true,"max_tokens":6,"temperature":0,"stream_options":{"include_usage":true}}""");
        Assert.AreEqual(HttpStatusCode.OK, status, body);
        Assert.AreEqual("text/event-stream", response.Content.Headers.ContentType!.MediaType);
        Assert.IsTrue(body.EndsWith("data: [DONE]\n\n", StringComparison.Ordinal), body);
        string[] events = body.Split("\n\n", StringSplitOptions.RemoveEmptyEntries);
        Assert.IsTrue(events.All(e => e.StartsWith("data: ", StringComparison.Ordinal) && !e.Contains('\n')), body);
        var chunks = events[..^1].Select(e => JsonDocument.Parse(e["data: ".Length..]).RootElement).ToArray();
        Assert.IsTrue(chunks.All(c => c.GetProperty("object").GetString() == "chat.completion.chunk"));
        Assert.AreEqual(1, chunks.Select(c => c.GetProperty("id").GetString()).Distinct().Count(), "one id for the whole stream");
        Assert.AreEqual("assistant", chunks[0].GetProperty("choices")[0].GetProperty("delta").GetProperty("role").GetString());
        var withChoices = chunks.Where(c => c.GetProperty("choices").GetArrayLength() > 0).ToArray();
        Assert.AreEqual("length", withChoices[^1].GetProperty("choices")[0].GetProperty("finish_reason").GetString());
        Assert.IsTrue(withChoices[..^1].All(c => c.GetProperty("choices")[0].GetProperty("finish_reason").ValueKind == JsonValueKind.Null));
        var usage = chunks[^1].GetProperty("usage");
        Assert.AreEqual(6, usage.GetProperty("completion_tokens").GetInt32());
        Assert.AreEqual(0, chunks[^1].GetProperty("choices").GetArrayLength());
    }

    [TestMethod]
    public async Task CompletionStreamUsesTextCompletionChunks()
    {
        var (status, body, _) = await Post("/v1/completions", """{"prompt":"The moon","stream":true,"max_tokens":4,"temperature":0}""");
        Assert.AreEqual(HttpStatusCode.OK, status, body);
        string[] events = body.Split("\n\n", StringSplitOptions.RemoveEmptyEntries);
        Assert.AreEqual("data: [DONE]", events[^1]);
        var chunks = events[..^1].Select(e => JsonDocument.Parse(e["data: ".Length..]).RootElement).ToArray();
        Assert.IsTrue(chunks.All(c => c.GetProperty("object").GetString() == "text_completion"));
        Assert.AreEqual("length", chunks[^1].GetProperty("choices")[0].GetProperty("finish_reason").GetString());
    }

    [TestMethod]
    public async Task MalformedJsonWrongTypesAndUnknownRolesAreErrorObjects()
    {
        var cases = new (string Body, string Code, string? Param)[]
        {
            ("""{"messages":[{"role":"user","content":"hi"}""", "LLMB0801", null),
            ("""[1,2]""", "LLMB0801", null),
            ("""{"messages":"hi"}""", "LLMB0801", "messages"),
            ("""{"messages":[]}""", "LLMB0801", "messages"),
            ("""{"messages":[{"role":"wizard","content":"hi"}]}""", "LLMB0801", "messages[0].role"),
            ("""{"messages":[{"role":"user","content":42}]}""", "LLMB0801", "messages[0].content"),
            ("""{"messages":[{"role":"user","content":"hi"}],"max_tokens":"ten"}""", "LLMB0801", "max_tokens"),
            ("""{"messages":[{"role":"user","content":"hi"}],"max_tokens":0}""", "LLMB0801", "max_tokens"),
            ("""{"messages":[{"role":"user","content":"hi"}],"stream":"yes"}""", "LLMB0801", "stream"),
            ("""{"messages":[{"role":"user","content":"hi"}],"stop":["a","b","c","d","e"]}""", "LLMB0801", "stop"),
            ("""{"messages":[{"role":"user","content":"hi"}],"n":2}""", "LLMB0802", "n"),
            ("""{"messages":[{"role":"user","content":"hi"}],"logprobs":true}""", "LLMB0802", "logprobs"),
            ("""{"messages":[{"role":"tool","content":"42"}]}""", "LLMB0802", "messages[0].role"),
            ("""{"messages":[{"role":"user","content":[{"type":"image_url","image_url":{"url":"data:image/png;base64,AA=="}}]}]}""", "LLMB0802", "messages[0].content[0].type"),
        };
        foreach (var (json, code, param) in cases)
        {
            var (status, body, _) = await Post("/v1/chat/completions", json);
            Assert.AreEqual(HttpStatusCode.BadRequest, status, json);
            var error = Error(body);
            Assert.AreEqual(code, error.GetProperty("code").GetString(), json);
            Assert.AreEqual(param, error.GetProperty("param").ValueKind == JsonValueKind.Null ? null : error.GetProperty("param").GetString(), json);
            Assert.AreEqual("invalid_request_error", error.GetProperty("type").GetString());
        }
        var (unknownStatus, unknownBody, _) = await Post("/v1/chat/completions", """{"model":"gpt-4o","messages":[{"role":"user","content":"hi"}]}""");
        Assert.AreEqual(HttpStatusCode.NotFound, unknownStatus);
        Assert.AreEqual("LLMB0804", Error(unknownBody).GetProperty("code").GetString());
    }

    [TestMethod]
    public async Task PromptLongerThanTheModelTakesIsA400()
    {
        string longText = string.Join(' ', Enumerable.Repeat("moon", 100));
        var (status, body, _) = await Post("/v1/chat/completions", JsonSerializer.Serialize(new { messages = new[] { new { role = "user", content = longText } } }));
        Assert.AreEqual(HttpStatusCode.BadRequest, status, body);
        var error = Error(body);
        Assert.AreEqual("LLMB0620", error.GetProperty("code").GetString());
        StringAssert.Contains(error.GetProperty("message").GetString(), "at most 63");
    }

    [TestMethod]
    public async Task AnswerEndsAtEndOfSequenceOrSeqLengthWhateverMaxTokensSays()
    {
        var (status, body, _) = await Post("/v1/chat/completions", """{"messages":[{"role":"user","content":"Once upon a time"}],"temperature":0,"max_tokens":1000}""");
        Assert.AreEqual(HttpStatusCode.OK, status, body);
        var root = JsonDocument.Parse(body).RootElement;
        var usage = root.GetProperty("usage");
        string finish = root.GetProperty("choices")[0].GetProperty("finish_reason").GetString()!;
        if (finish == "length") Assert.AreEqual(64, usage.GetProperty("total_tokens").GetInt32(), body);
        else Assert.IsTrue(usage.GetProperty("total_tokens").GetInt32() < 64, body);
        Assert.AreEqual(ServingTestServer.RunAnswer(1, "Once upon a time", null).Text, root.GetProperty("choices")[0].GetProperty("message").GetProperty("content").GetString());
    }

    [TestMethod]
    public async Task SampledAnswersRepeatForTheSameSeed()
    {
        async Task<string> Sampled(int seed)
        {
            var (status, body, _) = await Post("/v1/completions", $$"""{"prompt":"The moon","max_tokens":8,"temperature":1.0,"top_k":0,"top_p":1.0,"seed":{{seed}}}""");
            Assert.AreEqual(HttpStatusCode.OK, status, body);
            return JsonDocument.Parse(body).RootElement.GetProperty("choices")[0].GetProperty("text").GetString()!;
        }
        string first = await Sampled(7);
        Assert.AreEqual(first, await Sampled(7));
        var others = new[] { await Sampled(8), await Sampled(9), await Sampled(10) };
        Assert.IsTrue(others.Any(o => o != first), "other seeds sample other answers");
    }

    [TestMethod]
    public async Task OversizedBodyIsA413()
    {
        string huge = JsonSerializer.Serialize(new { messages = new[] { new { role = "user", content = new string('x', 2 << 20) } } });
        // Expect: 100-continue, so the client hears the refusal before it sends the body (else the server's early close
        // may break the client's upload before it reads the answer).
        using var request = new HttpRequestMessage(HttpMethod.Post, "/v1/chat/completions") { Content = new StringContent(huge, Encoding.UTF8, "application/json") };
        request.Headers.ExpectContinue = true;
        using var response = await _http.SendAsync(request);
        Assert.AreEqual(HttpStatusCode.RequestEntityTooLarge, response.StatusCode);
        Assert.AreEqual("LLMB0805", Error(await response.Content.ReadAsStringAsync()).GetProperty("code").GetString());
    }

    [TestMethod]
    public async Task ModelsHealthAndUnknownPaths()
    {
        var models = JsonDocument.Parse(await _http.GetStringAsync("/v1/models")).RootElement;
        Assert.AreEqual("list", models.GetProperty("object").GetString());
        Assert.AreEqual(ServingTestServer.ModelName, models.GetProperty("data")[0].GetProperty("id").GetString());
        using var anonymous = ServingTestServer.Http(_server, apiKey: null);
        var health = JsonDocument.Parse(await anonymous.GetStringAsync("/health")).RootElement;
        Assert.AreEqual("ok", health.GetProperty("status").GetString());
        Assert.AreEqual(1, health.GetProperty("slots").GetInt32());
        var missingKey = await anonymous.GetAsync("/v1/models");
        Assert.AreEqual(HttpStatusCode.Unauthorized, missingKey.StatusCode);
        Assert.AreEqual("LLMB0803", Error(await missingKey.Content.ReadAsStringAsync()).GetProperty("code").GetString());
        var notFound = await _http.GetAsync("/v2/anything");
        Assert.AreEqual(HttpStatusCode.NotFound, notFound.StatusCode);
        Assert.AreEqual("LLMB0804", Error(await notFound.Content.ReadAsStringAsync()).GetProperty("code").GetString());
        var wrongMethod = await _http.GetAsync("/v1/chat/completions");
        Assert.AreEqual(HttpStatusCode.MethodNotAllowed, wrongMethod.StatusCode);
        Assert.AreEqual("LLMB0804", Error(await wrongMethod.Content.ReadAsStringAsync()).GetProperty("code").GetString());
    }
}
