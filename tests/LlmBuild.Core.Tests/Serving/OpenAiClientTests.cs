using System.ClientModel;
using System.ClientModel.Primitives;
using System.Text.Json;
using LlmBuild.Core.Serving;
using OpenAI;
using OpenAI.Chat;

namespace LlmBuild.Core.Tests.Serving;

/// <summary>`llmbuild serve` through the official OpenAI .NET client, as an application would use it.</summary>
[TestClass]
public sealed class OpenAiClientTests
{
    private static OpenAiServer _server = null!;
    private const string Prompt = "Once upon a time";

    [ClassInitialize]
    public static async Task Start(TestContext _) => _server = await ServingTestServer.StartAsync();

    [ClassCleanup]
    public static async Task Stop() => await _server.DisposeAsync();

    private static OpenAIClientOptions Options => new()
    {
        Endpoint = new Uri(_server.Address, "v1"),
        NetworkTimeout = TimeSpan.FromSeconds(60),
        RetryPolicy = new ClientRetryPolicy(maxRetries: 0),
    };

    private static ChatClient Chat(string key = ServingTestServer.ApiKey) => new(ServingTestServer.ModelName, new ApiKeyCredential(key), Options);

    private static ChatCompletionOptions Greedy(int maxTokens) => new() { Temperature = 0, MaxOutputTokenCount = maxTokens };

    [TestMethod]
    public void ChatAnswerIsTheGreedyAnswerOfLlmbuildRun()
    {
        ChatCompletion completion = Chat().CompleteChat([new UserChatMessage(Prompt)], Greedy(12));
        var run = ServingTestServer.RunAnswer(1, Prompt, 12);
        Assert.AreEqual(run.Text, completion.Content[0].Text);
        Assert.AreEqual(ChatFinishReason.Length, completion.FinishReason);
        Assert.AreEqual(ChatMessageRole.Assistant, completion.Role);
        Assert.AreEqual(run.PromptTokens, completion.Usage.InputTokenCount);
        Assert.AreEqual(12, completion.Usage.OutputTokenCount);
        Assert.AreEqual(run.PromptTokens + 12, completion.Usage.TotalTokenCount);
        Assert.AreEqual(ServingTestServer.ModelName, completion.Model);
    }

    [TestMethod]
    public void StreamedChatGivesTheSameAnswerInPieces()
    {
        var whole = Chat().CompleteChat([new UserChatMessage(Prompt)], Greedy(10)).Value.Content[0].Text;
        var pieces = new List<string>();
        ChatFinishReason? finish = null;
        ChatTokenUsage? usage = null;
        foreach (StreamingChatCompletionUpdate update in Chat().CompleteChatStreaming([new UserChatMessage(Prompt)], Greedy(10)))
        {
            pieces.AddRange(update.ContentUpdate.Select(p => p.Text));
            finish ??= update.FinishReason;
            usage ??= update.Usage;
        }
        Assert.AreEqual(whole, string.Concat(pieces));
        Assert.IsTrue(pieces.Count(p => p.Length > 0) > 1, "the answer arrives in several pieces");
        Assert.AreEqual(ChatFinishReason.Length, finish);
        Assert.IsNotNull(usage, "the client asks for usage in the stream; the last chunk carries it");
        Assert.AreEqual(10, usage.OutputTokenCount);
    }

    [TestMethod]
    public void StopSequenceEndsTheAnswerBeforeIt()
    {
        string whole = Chat().CompleteChat([new UserChatMessage(Prompt)], Greedy(16)).Value.Content[0].Text;
        // A stop sequence from the middle of the greedy answer: the answer ends just before its first occurrence.
        string stop = whole.Trim().Split(' ')[1];
        var options = Greedy(16);
        options.StopSequences.Add(stop);
        ChatCompletion stopped = Chat().CompleteChat([new UserChatMessage(Prompt)], options);
        Assert.AreEqual(whole[..whole.IndexOf(stop, StringComparison.Ordinal)], stopped.Content[0].Text);
        Assert.AreEqual(ChatFinishReason.Stop, stopped.FinishReason);

        var streamed = string.Concat(Chat().CompleteChatStreaming([new UserChatMessage(Prompt)], options)
            .SelectMany(u => u.ContentUpdate).Select(p => p.Text));
        Assert.AreEqual(stopped.Content[0].Text, streamed);
    }

    [TestMethod]
    public void LegacyCompletionsContinueThePrompt()
    {
        // The library's legacy-completions client is internal: send the request through its public pipeline (auth, errors).
        var pipeline = new OpenAIClient(new ApiKeyCredential(ServingTestServer.ApiKey), Options).Pipeline;
        using PipelineMessage message = pipeline.CreateMessage();
        message.Request.Method = "POST";
        message.Request.Uri = new Uri(_server.Address, "v1/completions");
        message.Request.Headers.Set("Content-Type", "application/json");
        message.Request.Content = BinaryContent.Create(BinaryData.FromObjectAsJson(new { model = ServingTestServer.ModelName, prompt = Prompt, max_tokens = 8, temperature = 0 }));
        pipeline.Send(message);
        Assert.AreEqual(200, message.Response!.Status);
        using var json = JsonDocument.Parse(message.Response.Content);
        var root = json.RootElement;
        Assert.AreEqual("text_completion", root.GetProperty("object").GetString());
        var choice = root.GetProperty("choices")[0];
        Assert.IsFalse(string.IsNullOrEmpty(choice.GetProperty("text").GetString()));
        Assert.AreEqual("length", choice.GetProperty("finish_reason").GetString());
        Assert.AreEqual(8, root.GetProperty("usage").GetProperty("completion_tokens").GetInt32());
        Assert.AreEqual(_server.Model.Tokenizer.Encode(Prompt).Length, root.GetProperty("usage").GetProperty("prompt_tokens").GetInt32());
    }

    [TestMethod]
    public void WrongApiKeyIsRefused()
    {
        var e = Assert.ThrowsExactly<ClientResultException>(() => Chat("wrong-key").CompleteChat([new UserChatMessage(Prompt)], Greedy(2)));
        Assert.AreEqual(401, e.Status);
        StringAssert.Contains(e.GetRawResponse()!.Content.ToString(), "LLMB0803");
    }

    [TestMethod]
    public void OutOfRangeTemperatureIsABadRequest()
    {
        var e = Assert.ThrowsExactly<ClientResultException>(() =>
            Chat().CompleteChat([new UserChatMessage(Prompt)], new ChatCompletionOptions { Temperature = 3.5f }));
        Assert.AreEqual(400, e.Status);
        using var json = JsonDocument.Parse(e.GetRawResponse()!.Content);
        var error = json.RootElement.GetProperty("error");
        Assert.AreEqual("LLMB0801", error.GetProperty("code").GetString());
        Assert.AreEqual("temperature", error.GetProperty("param").GetString());
        Assert.AreEqual("invalid_request_error", error.GetProperty("type").GetString());
    }

    [TestMethod]
    public void ModelsListTheServedModel()
    {
        var models = new OpenAI.Models.OpenAIModelClient(new ApiKeyCredential(ServingTestServer.ApiKey), Options).GetModels().Value;
        Assert.AreEqual(ServingTestServer.ModelName, models.Single().Id);
    }
}
