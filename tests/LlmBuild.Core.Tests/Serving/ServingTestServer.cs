using System.Net.Http.Headers;
using LlmBuild.Core.Runtime;
using LlmBuild.Core.Serving;
using LlmBuild.Core.Tests.Codegen;
using LlmBuild.Core.Tokenization;
using LlmBuild.Core.Tokenization.Chat;

namespace LlmBuild.Core.Tests.Serving;

/// <summary>
/// Servers over the example built at w4bf16 (SeqLength 64, the build other tests share), on a free loopback port, and
/// the answers `llmbuild run` gives for the same prompts (ChatSession over the emulator, greedy).
/// </summary>
internal static class ServingTestServer
{
    public const string ApiKey = "test-key";
    public const string ModelName = "tiny-qwen2";

    public static ExampleBuild.Built Build(int batch) =>
        batch == 1 ? ExampleBuild.Get("w4bf16") : ExampleBuild.Get("w4bf16", extra: ("Batch", batch.ToString()));

    public static Task<OpenAiServer> StartAsync(int batch = 1, int queue = 8, string? apiKey = ApiKey, double graceSeconds = 10, int port = 0)
    {
        var built = Build(batch);
        var model = ServedModel.Load(built.BModel, built.ConfigDir);
        return OpenAiServer.StartAsync(model, new ServeOptions
        {
            Port = port, ApiKey = apiKey, QueueCapacity = queue, ShutdownGrace = TimeSpan.FromSeconds(graceSeconds),
        });
    }

    public static HttpClient Http(OpenAiServer server, string? apiKey = ApiKey)
    {
        var http = new HttpClient { BaseAddress = server.Address, Timeout = TimeSpan.FromSeconds(60) };
        if (apiKey is not null) http.DefaultRequestHeaders.Authorization = new AuthenticationHeaderValue("Bearer", apiKey);
        return http;
    }

    /// <summary>The greedy answer of `llmbuild run -p <paramref name="user"/> --max-new-tokens N` on the same build.</summary>
    public static ChatTurn RunAnswer(int batch, string user, int? maxNewTokens)
    {
        var built = Build(batch);
        using var emulator = LlmEmulator.Load(built.BModel, built.ConfigDir);
        var session = new ChatSession(Tokenizer.Load(built.ConfigDir), ChatTemplate.Load(built.ConfigDir), new EmulatorTokenGenerator(emulator, new TokenSampler(null)),
            new ChatSessionOptions { SeqLength = emulator.SeqLength, MaxInputLength = emulator.PrefillLength, MaxNewTokens = maxNewTokens });
        return session.Ask(user);
    }
}
