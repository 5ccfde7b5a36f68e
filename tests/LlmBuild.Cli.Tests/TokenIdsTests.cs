using LlmBuild.Cli.Commands;
using LlmBuild.Core.Diagnostics;

namespace LlmBuild.Cli.Tests;

/// <summary>--ids parsing is the command line's job (logits, reference-logits): lists, files, coded errors.</summary>
[TestClass]
public sealed class TokenIdsTests
{
    [TestMethod]
    public void TokenIdsParseListsAndFiles()
    {
        CollectionAssert.AreEqual(new[] { 1, 2, 3 }, TokenIds.Parse("1,2,3"));
        string file = Path.GetTempFileName();
        File.WriteAllText(file, "[12522, 5193,\n264 882]\n");
        CollectionAssert.AreEqual(new[] { 12522, 5193, 264, 882 }, TokenIds.Parse(file));
        File.Delete(file);
        Assert.AreEqual(ErrorCodes.BadTokenIds, Assert.ThrowsExactly<LlmBuildException>(() => TokenIds.Parse("1,x")).Code);
        Assert.AreEqual(ErrorCodes.BadTokenIds, Assert.ThrowsExactly<LlmBuildException>(() => TokenIds.Parse(" , ")).Code);
    }
}
