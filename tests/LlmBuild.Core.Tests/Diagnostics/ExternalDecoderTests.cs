using LlmBuild.Tests;

namespace LlmBuild.Core.Tests.Diagnostics;

/// <summary>A missing decoder fails the test that needs it, saying how to get it, instead of passing or skipping.</summary>
[TestClass]
public sealed class ExternalDecoderTests
{
    [TestMethod]
    public void AMissingDecoderFailsWithHowToGetIt()
    {
        var e = Assert.ThrowsExactly<AssertFailedException>(() => ExternalDecoders.Require("/nonexistent/flatc", "flatbuffers-compiler"));
        StringAssert.Contains(e.Message, "./test.sh");
        StringAssert.Contains(e.Message, "apt-get install flatbuffers-compiler");
    }
}
