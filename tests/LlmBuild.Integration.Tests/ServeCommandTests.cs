using System.Diagnostics;
using System.Net.Http.Headers;
using System.Text;
using System.Text.Json;
using System.Text.RegularExpressions;

namespace LlmBuild.Integration.Tests;

/// <summary>`llmbuild serve` as a process: the built example answers over HTTP as `llmbuild run` does, and SIGTERM stops it gracefully.</summary>
[TestClass]
public sealed class ServeCommandTests
{
    private static string Cli => Path.Combine(AppContext.BaseDirectory, "llmbuild.dll");

    [TestMethod]
    public async Task ServesRunsGreedyAnswerAndStopsOnSigterm()
    {
        BuildHarness.Dotnet(BuildHarness.RepoRoot, ["build", Path.Combine("examples", "tiny-qwen2", "model.llmproj")]).AssertSucceeded();
        string bmodel = Path.Combine(BuildHarness.RepoRoot, "examples", "tiny-qwen2", "bin", "tiny-qwen2.bmodel");
        var run = BuildHarness.Dotnet(BuildHarness.RepoRoot, [Cli, "run", bmodel, "-p", "Once upon a time", "--max-new-tokens", "12"], buildFlags: false);
        run.AssertSucceeded();
        string runAnswer = Regex.Match(run.Output, "Answer: (.*)").Groups[1].Value;

        var psi = BuildHarness.StartInfo(BuildHarness.RepoRoot, [Cli, "serve", bmodel, "--port", "0", "--api-key", "k"], buildFlags: false);
        using var server = Process.Start(psi)!;
        try
        {
            string banner = await server.StandardOutput.ReadLineAsync().WaitAsync(TimeSpan.FromSeconds(60)) ?? "";
            var address = Regex.Match(banner, @"at (http://127\.0\.0\.1:\d+/)v1");
            if (!address.Success)
            {
                server.Kill();
                Assert.Fail(banner + server.StandardError.ReadToEnd());
            }
            using var http = new HttpClient { BaseAddress = new Uri(address.Groups[1].Value), Timeout = TimeSpan.FromSeconds(60) };
            http.DefaultRequestHeaders.Authorization = new AuthenticationHeaderValue("Bearer", "k");

            var answer = await http.PostAsync("/v1/chat/completions", new StringContent(
                """{"messages":[{"role":"user","content":"Once upon a time"}],"max_tokens":12,"temperature":0}""", Encoding.UTF8, "application/json"));
            var json = JsonDocument.Parse(await answer.Content.ReadAsStringAsync()).RootElement;
            Assert.AreEqual(runAnswer, json.GetProperty("choices")[0].GetProperty("message").GetProperty("content").GetString());

            // A stream in flight when SIGTERM comes finishes (the grace period is 10 s), then the process exits 0.
            using var request = new HttpRequestMessage(HttpMethod.Post, "/v1/completions")
            {
                Content = new StringContent("""{"prompt":"Once upon a time","max_tokens":40,"temperature":0,"stream":true,"ignore_eos":true}""", Encoding.UTF8, "application/json"),
            };
            using var stream = await http.SendAsync(request, HttpCompletionOption.ResponseHeadersRead);
            var reader = new StreamReader(await stream.Content.ReadAsStreamAsync());
            Assert.IsNotNull(await reader.ReadLineAsync());
            using (var kill = Process.Start("kill", ["-TERM", server.Id.ToString()])) kill.WaitForExit();
            string rest = await reader.ReadToEndAsync();
            StringAssert.Contains(rest, "\"finish_reason\":\"length\"");
            Assert.IsTrue(rest.EndsWith("data: [DONE]\n\n", StringComparison.Ordinal), rest);
            Assert.IsTrue(server.WaitForExit(30_000), "the server exits after SIGTERM");
            Assert.AreEqual(0, server.ExitCode);
            StringAssert.Contains(await server.StandardOutput.ReadToEndAsync(), "Stopped.");
        }
        finally
        {
            if (!server.HasExited) server.Kill();
        }
    }
}
