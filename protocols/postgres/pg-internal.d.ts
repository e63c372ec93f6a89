/** pg's helper that reads a certificate's signature hash algorithm (used for SCRAM channel binding). */
declare module 'pg/lib/crypto/cert-signatures.js' {
  const certSignatures: { signatureAlgorithmHashFromCertificate(der: Buffer, index?: number): string };
  export default certSignatures;
}
