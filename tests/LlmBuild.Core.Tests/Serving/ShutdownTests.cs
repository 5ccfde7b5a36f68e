using System.Net;
using System.Text;
using LlmBuild.Core.Diagnostics;
using LlmBuild.Core.Serving;

namespace LlmBuild.Core.Tests.Serving;

/// <summary>Stopping (what SIGTERM does): in-flight streams finish within the grace period or end with an error event; the port is checked at start.</summary>
[TestClass]
public sealed class ShutdownTests
{
    private const string EndlessStream = """{"messages":[{"role":"user","content":"Once upon a time"}],"stream":true,"temperature":0,"ignore_eos":true}""";

    /// <summary>Starts a stream that only SeqLength ends, reads its first event, stops the server, and returns the whole stream.</summary>
    private static async Task<string> StreamAcrossStop(OpenAiServer server)
    {
        using var http = ServingTestServer.Http(server);
        using var request = new HttpRequestMessage(HttpMethod.Post, "/v1/chat/completions") { Content = new StringContent(EndlessStream, Encoding.UTF8, "application/json") };
        using var response = await http.SendAsync(request, HttpCompletionOption.ResponseHeadersRead);
        Assert.AreEqual(HttpStatusCode.OK, response.StatusCode);
        var reader = new StreamReader(await response.Content.ReadAsStreamAsync());
        string first = await reader.ReadLineAsync() ?? "";
        var stopping = server.StopAsync();
        string rest = await reader.ReadToEndAsync();
        await stopping;
        return first + "\n" + rest;
    }

    [TestMethod]
    public async Task InFlightStreamFinishesWithinTheGracePeriod()
    {
        await using var server = await ServingTestServer.StartAsync(graceSeconds: 30);
        string stream = await StreamAcrossStop(server);
        StringAssert.Contains(stream, "\"finish_reason\":\"length\"");
        Assert.IsFalse(stream.Contains(ErrorCodes.ServeShuttingDown), stream);
        Assert.IsTrue(stream.EndsWith("data: [DONE]\n\n", StringComparison.Ordinal), stream);
    }

    [TestMethod]
    public async Task InFlightStreamPastTheGracePeriodEndsWithAnErrorEvent()
    {
        await using var server = await ServingTestServer.StartAsync(graceSeconds: 0);
        string stream = await StreamAcrossStop(server);
        StringAssert.Contains(stream, ErrorCodes.ServeShuttingDown);
        Assert.IsFalse(stream.Contains("\"finish_reason\":\""), stream);
        Assert.IsTrue(stream.EndsWith("data: [DONE]\n\n", StringComparison.Ordinal), stream);
        Assert.ThrowsExactly<LlmBuildException>(() => server.Engine.Submit(new Generation([1], new GenerationSettings(null, 0, 1))));
    }

    [TestMethod]
    public async Task APortInUseIsACodedError()
    {
        await using var first = await ServingTestServer.StartAsync();
        var e = await Assert.ThrowsExactlyAsync<LlmBuildException>(() => ServingTestServer.StartAsync(port: first.Address.Port));
        Assert.AreEqual(ErrorCodes.ServeCannotListen, e.Code);
    }
}
