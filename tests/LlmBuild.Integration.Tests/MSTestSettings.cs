// Real builds share the machine's two cores and the repository's task assembly: run them one at a time.
[assembly: Microsoft.VisualStudio.TestTools.UnitTesting.DoNotParallelize]
