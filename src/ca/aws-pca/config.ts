import * as v from 'valibot';
import { mapping, matching, optional, required, text, type ConfigContext } from '../../core/config-schema.js';
import { defineCaBackend } from '../backend-type.js';

/** AWS Private CA (ACM PCA) through the AWS SDK; credentials come from the SDK's usual chain. */
export const awsPcaType = defineCaBackend({
  name: 'aws-pca',
  key: 'awsPca',
  description: 'AWS Private CA (ACM PCA). Credentials and region come from the AWS SDK\'s usual chain (environment, profile, instance role) unless set here.',
  schema: (_ctx: ConfigContext) =>
    v.pipe(
      mapping({
        certificateAuthorityArn: required(
          matching(/^arn:aws[a-z-]*:acm-pca:/, 'an ACM PCA ARN (arn:aws:acm-pca:region:account:certificate-authority/id)'),
          'The CA: `arn:aws:acm-pca:<region>:<account>:certificate-authority/<id>`.',
        ),
        region: optional(text(), 'AWS region. Default: the SDK\'s (`AWS_REGION`, profile).'),
        endpoint: optional(text(), 'Another endpoint, e.g. a VPC endpoint or an emulator.'),
        signingAlgorithm: optional(text(), 'Must suit the CA\'s key: `SHA256WITHECDSA` (the default) for EC CAs, `SHA256WITHRSA` for RSA CAs.'),
        templateArn: optional(text(), 'Certificate template. Default `arn:aws:acm-pca:::template/EndEntityCertificate_APIPassthrough/V1`; only APIPassthrough / APICSRPassthrough templates take the SAN from the request.'),
      }),
      v.description('Settings of the AWS Private CA backend (required when `ca.backend` is `aws-pca`).'),
    ),
  create: async (s) => {
    const { AwsPcaBackend } = await import('./aws-pca-backend.js');
    return new AwsPcaBackend(s);
  },
});
